//! Field-level envelope encryption of personal data.

mod aead;
mod codec;
pub mod error;
mod keys;
mod wrap;

pub use error::CryptoError;
pub use keys::{Dek, Kek, Keyring};
pub use wrap::WrappedDek;

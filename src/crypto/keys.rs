//! Keys: data-encryption keys (one per subject and version), key-encryption keys, and
//! the keyring that holds the latter, parsed from one line of text
//! (its format is on [`Keyring`]).

use std::collections::BTreeMap;
use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::aead::{random_key, KEY_LEN};
use super::codec::{decode_key, encode_key};
use super::error::CryptoError;

const HIDDEN: &str = "<hidden>";

/// A data-encryption key: 256 random bits that seal one subject's fields. Stored only
/// wrapped ([`super::WrappedDek`]); wiped from memory when dropped.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Dek {
    key: [u8; KEY_LEN],
}

impl Dek {
    /// A fresh key from the platform's random source.
    pub fn generate() -> Result<Dek, CryptoError> {
        Ok(Dek { key: *random_key()? })
    }

    /// A key from known bytes (tests, an imported key). The caller's copy is its own to
    /// wipe.
    pub fn from_bytes(key: [u8; KEY_LEN]) -> Dek {
        Dek { key }
    }

    pub(crate) fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.key
    }
}

impl fmt::Debug for Dek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dek").field("key", &HIDDEN).finish()
    }
}

/// A key-encryption key: 256 bits, from the keyring text, that wraps data-encryption
/// keys. Wiped from memory when dropped.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Kek {
    #[zeroize(skip)]
    version: u32,
    key: [u8; KEY_LEN],
}

impl Kek {
    /// Version 0 is not a version: keyring versions start at 1.
    pub fn new(version: u32, key: [u8; KEY_LEN]) -> Result<Kek, CryptoError> {
        if version == 0 {
            return Err(CryptoError::Keyring { reason: "key versions start at v1".into() });
        }
        Ok(Kek { version, key })
    }

    pub fn generate(version: u32) -> Result<Kek, CryptoError> {
        Kek::new(version, *random_key()?)
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub(crate) fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.key
    }
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kek").field("version", &self.version).field("key", &HIDDEN).finish()
    }
}

/// Key-encryption keys by version: one primary that wraps, and a minimum version
/// below which keys are retired.
///
/// # Text form
///
/// One line, suitable for an environment variable or a secret file:
///
/// ```text
/// v1:<key>,v2:<key>;primary=v2;min=v1
/// ```
///
/// - Before the first `;`, comma-separated entries `v<N>:<key>`: `N` a decimal version
///   from 1 to 4294967295 (digits only), `<key>` 32 bytes in unpadded base64url
///   (43 characters). Versions are unique; their order does not matter.
/// - Then options, each after a `;`, each at most once:
///   - `primary=v<N>`: the key that wraps new data-encryption keys; it must be listed.
///     Default: the highest listed version.
///   - `min=v<N>`: the lowest version that may still unwrap. Keys below it are
///     retired: unwrapping under them fails with [`CryptoError::KekRetired`] even if
///     they are still listed (keeping them listed lets an operator lower `min` again).
///     At most the primary. Default: the lowest listed version.
/// - Whitespace, newlines included, around entries, options and the separators is
///   ignored, so a file may end in a newline.
///
/// [`Keyring::to_text`] always writes both options. Error messages name versions and
/// positions, never key text.
#[derive(Clone)]
pub struct Keyring {
    keks: BTreeMap<u32, Kek>,
    primary: u32,
    min_version: u32,
}

impl Keyring {
    /// A keyring with one fresh key, `v1`, primary.
    pub fn generate() -> Result<Keyring, CryptoError> {
        Keyring::new([Kek::generate(1)?], None, None)
    }

    /// `primary` defaults to the highest version, `min_version` to the lowest.
    pub fn new(
        keks: impl IntoIterator<Item = Kek>,
        primary: Option<u32>,
        min_version: Option<u32>,
    ) -> Result<Keyring, CryptoError> {
        let mut map = BTreeMap::new();
        for kek in keks {
            let version = kek.version;
            if map.insert(version, kek).is_some() {
                return Err(keyring(format!("v{version} is listed twice")));
            }
        }
        let (Some(&lowest), Some(&highest)) = (map.keys().next(), map.keys().next_back()) else {
            return Err(keyring("no keys".into()));
        };
        let primary = primary.unwrap_or(highest);
        let min_version = min_version.unwrap_or(lowest);
        if !map.contains_key(&primary) {
            return Err(keyring(format!("primary v{primary} is not listed")));
        }
        if min_version == 0 || min_version > primary {
            return Err(keyring(format!("min v{min_version} must be between v1 and the primary v{primary}")));
        }
        Ok(Keyring { keks: map, primary, min_version })
    }

    /// Parses the keyring text (see the type's docs).
    pub fn parse(text: &str) -> Result<Keyring, CryptoError> {
        let mut parts = text.split(';');
        let entries = parts.next().unwrap_or_default();
        let mut keks = Vec::new();
        for (i, entry) in entries.split(',').enumerate() {
            let entry = entry.trim();
            let (version, key) =
                entry.split_once(':').ok_or_else(|| keyring(format!("entry {} is not `v<N>:<key>`", i + 1)))?;
            let version = parse_version(version.trim())
                .ok_or_else(|| keyring(format!("entry {}: version is not `v<N>` with N from 1", i + 1)))?;
            let key = decode_key::<KEY_LEN>(key.trim())
                .ok_or_else(|| keyring(format!("v{version}: key is not 32 bytes of unpadded base64url")))?;
            keks.push(Kek::new(version, *key)?);
        }
        let (mut primary, mut min) = (None, None);
        for option in parts {
            let (name, value) = option.split_once('=').unwrap_or((option, ""));
            let slot = match name.trim() {
                "primary" => &mut primary,
                "min" => &mut min,
                other => return Err(keyring(format!("unknown option {other:?} (primary, min)"))),
            };
            let version = parse_version(value.trim())
                .ok_or_else(|| keyring(format!("option {}: value is not `v<N>` with N from 1", name.trim())))?;
            if slot.replace(version).is_some() {
                return Err(keyring(format!("option {} given twice", name.trim())));
            }
        }
        Keyring::new(keks, primary, min)
    }

    /// The keyring as text, keys included: handle it as the secret it is.
    pub fn to_text(&self) -> Zeroizing<String> {
        // Reserved up front: a growing string would leave copies of keys behind.
        let mut text = Zeroizing::new(String::with_capacity(self.keks.len() * 64 + 64));
        for (i, kek) in self.keks.values().enumerate() {
            if i > 0 {
                text.push(',');
            }
            text.push_str(&format!("v{}:", kek.version));
            text.push_str(&encode_key(&kek.key));
        }
        text.push_str(&format!(";primary=v{};min=v{}", self.primary, self.min_version));
        text
    }

    /// The keyring text with one more key, fresh, one version above the highest, as
    /// primary. The minimum is unchanged, so everything wrapped so far still unwraps;
    /// [`Keyring::rewrap`] then moves wraps to the new key.
    pub fn rotate(&self) -> Result<Zeroizing<String>, CryptoError> {
        let highest = self.keks.keys().next_back().copied().unwrap_or(0);
        let version = highest.checked_add(1).ok_or_else(|| keyring("no version left above the highest".into()))?;
        let mut keks: Vec<Kek> = self.keks.values().cloned().collect();
        keks.push(Kek::generate(version)?);
        Ok(Keyring::new(keks, Some(version), Some(self.min_version))?.to_text())
    }

    /// The keyring text with a new minimum version: keys below it are retired. Raise it
    /// only once every wrap has been moved off them.
    pub fn with_min_version(&self, min_version: u32) -> Result<Zeroizing<String>, CryptoError> {
        Ok(Keyring::new(self.keks.values().cloned(), Some(self.primary), Some(min_version))?.to_text())
    }

    pub fn primary(&self) -> &Kek {
        // `new` checked that the primary is listed, and the map never changes after.
        &self.keks[&self.primary]
    }

    pub fn primary_version(&self) -> u32 {
        self.primary
    }

    pub fn min_version(&self) -> u32 {
        self.min_version
    }

    /// Every listed version, retired ones included, in ascending order.
    pub fn versions(&self) -> impl Iterator<Item = u32> + '_ {
        self.keks.keys().copied()
    }

    /// The key of this version, if it may still unwrap.
    pub fn kek(&self, version: u32) -> Result<&Kek, CryptoError> {
        // Version 0 was never issued, so it is unknown rather than retired.
        if version != 0 && version < self.min_version {
            return Err(CryptoError::KekRetired { version, min_version: self.min_version });
        }
        self.keks.get(&version).ok_or(CryptoError::UnknownKekVersion { version })
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("versions", &self.keks.keys().collect::<Vec<_>>())
            .field("primary", &self.primary)
            .field("min_version", &self.min_version)
            .finish()
    }
}

impl std::str::FromStr for Keyring {
    type Err = CryptoError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Keyring::parse(text)
    }
}

fn keyring(reason: String) -> CryptoError {
    CryptoError::Keyring { reason }
}

/// `v<N>`, N decimal digits only (no sign), from 1.
fn parse_version(text: &str) -> Option<u32> {
    let digits = text.strip_prefix('v')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&v| v > 0)
}

#[cfg(test)]
mod tests;

//! The `projector` command line as a library: the binary only calls [`cli::main`], and
//! tests reach the command tree ([`cli::Cli`]) to check every argument's help.

mod backend;
pub mod cli;
mod commands;
mod handlers;
mod keyring;
mod logging;
mod output;
mod seed;
mod table;

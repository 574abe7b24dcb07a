//! `projector completions`: the shell completion script for the whole command tree,
//! written to stdout. It needs no configuration and no store.

use anyhow::Result;
use clap::CommandFactory;

use crate::say;

#[derive(clap::Args)]
pub struct Args {
    /// The shell to write the completion script for.
    shell: clap_complete::Shell,
}

pub fn execute(args: &Args) -> Result<()> {
    let mut cli = crate::cli::Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cli, "projector", &mut script);
    say!("{}", String::from_utf8_lossy(&script).trim_end());
    Ok(())
}

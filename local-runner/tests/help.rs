//! Every argument of every `projector` command has help text, and each command's
//! `--help`, as the binary prints it, reads exactly as checked in under `tests/help/`
//! (`projector-dlq-show.txt` for `projector dlq show --help`).
//!
//! After changing a command or its help, refresh the expected files and review the diff:
//!
//! ```sh
//! UPDATE_HELP=1 cargo test -p projector-cli --test help
//! ```

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::CommandFactory;
use projector_cli::cli::Cli;

/// Every command of the tree (the root first) with its path of names, leaving out
/// clap's generated `help` subcommand.
fn commands() -> Vec<(Vec<String>, clap::Command)> {
    fn walk(cmd: &clap::Command, path: Vec<String>, out: &mut Vec<(Vec<String>, clap::Command)>) {
        out.push((path.clone(), cmd.clone()));
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let mut p = path.clone();
            p.push(sub.get_name().to_owned());
            walk(sub, p, out);
        }
    }
    let mut root = Cli::command();
    root.build();
    let mut out = Vec::new();
    walk(&root, vec!["projector".to_owned()], &mut out);
    out
}

fn expected_file(path: &[String]) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/help").join(format!("{}.txt", path.join("-")))
}

#[test]
fn every_command_and_argument_has_help_text() {
    let mut missing = Vec::new();
    for (path, cmd) in commands() {
        let name = path.join(" ");
        if cmd.get_about().is_none() && path.len() > 1 {
            missing.push(format!("command `{name}` has no description"));
        }
        for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                missing.push(format!("`{name}`: argument {} has no help text", arg.get_id()));
            }
        }
    }
    assert!(missing.is_empty(), "help text missing:\n  {}", missing.join("\n  "));
}

#[test]
fn help_output_matches_the_checked_in_files() {
    let update = std::env::var_os("UPDATE_HELP").is_some_and(|v| !v.is_empty() && v != "0");
    let mut wanted = Vec::new();
    let mut differ = Vec::new();
    for (path, _) in commands() {
        let out = Command::new(support::BIN)
            .args(&path[1..])
            .arg("--help")
            // Help shows the values of `env` arguments; the expected text shows none.
            .env_remove("PROJECTOR_CONFIG")
            .env_remove("PROJECTOR_ACTOR")
            .env_remove("DATABASE_URL")
            .output()
            .expect("run projector --help");
        let name = path.join(" ");
        assert!(out.status.success(), "`{name} --help` failed: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8(out.stdout).expect("help is UTF-8");
        let file = expected_file(&path);
        wanted.push(file.clone());
        if update {
            std::fs::write(&file, &text).unwrap_or_else(|e| panic!("write {}: {e}", file.display()));
            continue;
        }
        match std::fs::read_to_string(&file) {
            Ok(expected) if expected == text => {}
            Ok(expected) => differ.push(format!(
                "`{name} --help` differs from {}\n--- expected ---\n{expected}--- actual ---\n{text}",
                file.display()
            )),
            Err(e) => differ.push(format!("`{name} --help`: cannot read {}: {e}", file.display())),
        }
    }
    // A file for a command that no longer exists would go stale unnoticed.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/help");
    for entry in std::fs::read_dir(&dir).expect("tests/help") {
        let file = entry.expect("tests/help entry").path();
        if !wanted.contains(&file) {
            if update {
                std::fs::remove_file(&file).unwrap_or_else(|e| panic!("remove {}: {e}", file.display()));
            } else {
                differ.push(format!("{} belongs to no command; remove it", file.display()));
            }
        }
    }
    assert!(
        differ.is_empty(),
        "{}\n\nIf the change is intended: UPDATE_HELP=1 cargo test -p projector-cli --test help",
        differ.join("\n\n")
    );
}

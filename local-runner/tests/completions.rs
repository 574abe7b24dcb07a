//! `projector completions <shell>` writes a completion script for the whole command
//! tree, without needing a configuration or a store.

mod support;

use std::time::Duration;

use support::Workspace;

const QUICK: Duration = Duration::from_secs(30);

#[test]
fn bash_completion_knows_the_subcommands() {
    // A configuration that does not parse: completions must not need it.
    let ws = Workspace::with_config(None, "projections: [not, a, map]\n");
    let out = ws.run(&["completions", "bash"], QUICK);
    out.assert_success("completions bash");
    for word in ["init", "append", "status", "rebuild", "scale", "state", "dlq", "skip", "discard", "completions"] {
        assert!(out.stdout.contains(word), "bash completion lacks {word}\n{}", out.describe());
    }
    assert!(out.stdout.contains("--from-position"), "flags are completed too\n{}", out.describe());
    assert!(!out.stdout.contains("--from-version"), "the hidden alias is not offered\n{}", out.describe());
    assert!(!ws.path().join(".projector").exists(), "no store is created");
}

#[test]
fn every_offered_shell_works_and_an_unknown_one_is_named() {
    let ws = Workspace::empty(None);
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = ws.run(&["completions", shell], QUICK);
        out.assert_success(&format!("completions {shell}"));
        assert!(out.stdout.contains("projector") && out.stdout.contains("rebuild"), "{shell}\n{}", out.describe());
    }
    ws.run(&["completions", "tcsh"], QUICK).assert_failure_mentioning("an unknown shell", "possible values");
}

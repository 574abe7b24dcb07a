//! Which log lines the `projector` binary writes: `-v`/`-q` on the command line, else
//! `PROJECTOR_LOG`, else `RUST_LOG`, else warnings and errors; no colour codes under
//! `NO_COLOR`, even at a terminal.

mod support;

use std::process::Command;
use std::time::Duration;

use support::{Output, Workspace, BIN};

const QUICK: Duration = Duration::from_secs(30);
/// The line every command logs at info level.
const INFO_LINE: &str = "INFO projector_cli::cli: configuration";

/// `projector status` (which only reads, and so needs no store) with these variables
/// and extra arguments, all other log variables removed.
fn status(ws: &Workspace, flags: &[&str], env: &[(&str, &str)]) -> Output {
    let mut vars: Vec<(&str, Option<&str>)> = vec![("PROJECTOR_LOG", None), ("RUST_LOG", None)];
    vars.extend(env.iter().map(|(k, v)| (*k, Some(*v))));
    let mut args = flags.to_vec();
    args.push("status");
    let out = ws.run_with(&args, &vars, QUICK);
    out.assert_success(&format!("projector {}", args.join(" ")));
    out
}

fn logs_info(out: &Output) -> bool {
    out.stderr.contains(INFO_LINE)
}

#[test]
fn flags_and_variables_choose_the_log_level() {
    let ws = Workspace::empty(None);
    let quiet = status(&ws, &[], &[]);
    assert!(!logs_info(&quiet), "warnings and errors only by default\n{}", quiet.describe());
    let verbose = status(&ws, &["-v"], &[]);
    assert!(logs_info(&verbose), "-v logs info\n{}", verbose.describe());
    assert!(!verbose.stderr.contains("DEBUG"), "-v is info, not debug\n{}", verbose.describe());

    let rust_log = status(&ws, &[], &[("RUST_LOG", "info")]);
    assert!(logs_info(&rust_log), "RUST_LOG=info\n{}", rust_log.describe());
    let projector_log = status(&ws, &[], &[("PROJECTOR_LOG", "info")]);
    assert!(logs_info(&projector_log), "PROJECTOR_LOG=info\n{}", projector_log.describe());
    let both = status(&ws, &[], &[("PROJECTOR_LOG", "warn"), ("RUST_LOG", "info")]);
    assert!(!logs_info(&both), "PROJECTOR_LOG wins over RUST_LOG\n{}", both.describe());
    let flag_wins = status(&ws, &["-q"], &[("PROJECTOR_LOG", "info")]);
    assert!(!logs_info(&flag_wins), "-q wins over PROJECTOR_LOG\n{}", flag_wins.describe());

    let bad = status(&ws, &[], &[("PROJECTOR_LOG", "projector=[")]);
    assert!(bad.stderr.contains("PROJECTOR_LOG=\"projector=[\" is not a log filter"), "{}", bad.describe());
    let clash = ws.run(&["-v", "-q", "status"], QUICK);
    clash.assert_failure_mentioning("-v with -q", "cannot be used with");
}

/// Runs `projector -v status` at a pseudo-terminal (through `script`), where colour
/// is on unless `NO_COLOR` says otherwise; `None` when `script` is not installed.
fn at_a_terminal(ws: &Workspace, no_color: Option<&str>) -> Option<String> {
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &format!("{BIN} -v status"), "/dev/null"])
        .current_dir(ws.path())
        .env_remove("PROJECTOR_LOG")
        .env_remove("RUST_LOG")
        .env_remove("DATABASE_URL")
        .env_remove("PROJECTOR_CONFIG")
        .env_remove("NO_COLOR");
    if let Some(v) = no_color {
        cmd.env("NO_COLOR", v);
    }
    let out = cmd.output().ok()?;
    assert!(out.status.success(), "script: {}", String::from_utf8_lossy(&out.stderr));
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn no_color_turns_colour_off_at_a_terminal() {
    let ws = Workspace::empty(None);
    let Some(coloured) = at_a_terminal(&ws, None) else {
        eprintln!("`script` is not installed: cannot give the binary a terminal; skipped");
        return;
    };
    assert!(coloured.contains("configuration") && coloured.contains('\u{1b}'), "colour at a terminal:\n{coloured:?}");
    let plain = at_a_terminal(&ws, Some("1")).expect("script ran before");
    assert!(plain.contains("configuration") && !plain.contains('\u{1b}'), "NO_COLOR=1:\n{plain:?}");
    let empty = at_a_terminal(&ws, Some("")).expect("script ran before");
    assert!(empty.contains('\u{1b}'), "an empty NO_COLOR does not count:\n{empty:?}");
}

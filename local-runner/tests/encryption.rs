//! Field encryption through the command line, on the embedded store: `keys init` writes
//! a private file and never overwrites one; `append` seals the configured fields; a
//! granted projection reads them, an ungranted one reads them redacted; rotation,
//! rewrap, retire and shred work end to end; and no log line of any of it, at the
//! highest verbosity, holds a personal value or key material.

mod support;

use std::time::Duration;

use support::{test_config, Workspace};

const QUICK: Duration = Duration::from_secs(60);
const USER: &str = "0b7c6f0e-1d2e-4f30-8a4b-5c6d7e8f9a01";
const EMAIL: &str = "grace.hopper@navy.example";
const NAME: &str = "Grace Brewster Hopper";
const KEYRING_VAR: &str = "PROJECTOR_TEST_KEYRING";

fn config() -> String {
    let base = test_config(1).replace(
        "    batch_size: 500\n    partitions: 1\n",
        "    batch_size: 500\n    partitions: 1\n    decrypt: [email]\n",
    );
    format!("{base}encryption:\n  keyring_env: {KEYRING_VAR}\n  fields:\n    UserRegistered: [email, name]\n")
}

/// The key texts of a keyring (`v1:<key>,...;primary=..`), to look for in logs.
fn keys_of(keyring: &str) -> Vec<String> {
    let entries = keyring.split(';').next().unwrap_or_default();
    entries.split(',').filter_map(|e| e.split_once(':')).map(|(_, key)| key.trim().to_owned()).collect()
}

#[test]
fn keys_init_writes_a_private_file_and_never_overwrites_one() {
    let ws = Workspace::empty(None);
    ws.run(&["keys", "init", "--out", "keyring.txt"], QUICK).assert_success("keys init --out");
    let path = ws.path().join("keyring.txt");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("keyring file").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the keyring file is private");
    }
    let text = std::fs::read_to_string(&path).expect("read keyring");
    projector::crypto::Keyring::parse(&text).expect("a keyring the runtime reads");
    ws.run(&["keys", "init", "--out", "keyring.txt"], QUICK).assert_failure_mentioning("a second init", "exists");
    assert_eq!(std::fs::read_to_string(&path).expect("read again"), text, "the first keyring is untouched");

    let out = ws.run(&["keys", "init"], QUICK);
    out.assert_success("keys init to stdout");
    projector::crypto::Keyring::parse(out.stdout.trim()).expect("stdout is the keyring alone");
    assert!(out.stderr.contains("handle it as a secret"), "{}", out.describe());
}

#[test]
fn a_keyring_file_readable_by_others_is_refused() {
    let ws =
        Workspace::with_config(None, &config().replace(&format!("keyring_env: {KEYRING_VAR}"), "keyring_file: k.txt"));
    ws.run(&["keys", "init", "--out", "k.txt"], QUICK).assert_success("init");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(ws.path().join("k.txt"), std::fs::Permissions::from_mode(0o644)).expect("chmod");
        ws.write("in.jsonl", &registered("any"));
        ws.run(&["append", "in.jsonl"], QUICK).assert_failure_mentioning("a shared keyring file", "chmod 600");
    }
}

fn registered(expected: &str) -> String {
    serde_json::json!({
        "aggregate_id": USER, "aggregate_type": "user", "expected_version": expected,
        "idempotency_key": "signup-grace", "event_type": "UserRegistered",
        "event_data": {"email": EMAIL, "name": NAME, "plan": "pro"},
    })
    .to_string()
}

#[test]
fn sealed_appends_granted_reads_rotation_and_shredding_log_no_personal_data_or_keys() {
    flow(None, || {});
}

/// On PostgreSQL, whose driver logs statements with their parameters at debug level.
#[test]
fn on_postgres_the_same_logs_no_personal_data_or_keys() {
    let pg = support::Pg::new();
    flow(Some(pg.url()), || pg.settle());
}

fn flow(db_url: Option<&str>, settle: impl Fn()) {
    let ws = Workspace::with_config(db_url, &config());
    let init = ws.run(&["keys", "init"], QUICK);
    init.assert_success("keys init");
    let keyring = init.stdout.trim().to_owned();
    let logs = std::cell::RefCell::new(String::new());
    let run = |args: &[&str], keyring: &str| {
        let mut all = vec!["-vvv"];
        all.extend_from_slice(args);
        let out = ws.run_with(&all, &[(KEYRING_VAR, Some(keyring)), ("PROJECTOR_LOG", None)], QUICK);
        logs.borrow_mut().push_str(&out.stderr);
        out
    };

    ws.write("in.jsonl", &[registered("any"), registered("any")].join("\n"));
    let out = run(&["append", "in.jsonl"], &keyring);
    out.assert_success("sealed append");
    assert!(out.stdout.contains("appended 1 event(s) in 1 append(s); 1 repeated"), "{}", out.describe());
    logs.borrow_mut().push_str(&out.stdout);
    settle();

    run(&["init"], &keyring).assert_success("init");
    let out = run(&["rebuild", "user-profile", "--json"], &keyring);
    out.assert_success("granted rebuild");
    logs.borrow_mut().push_str(&out.stdout);
    let out = run(&["state", "user-profile", USER, "--json"], &keyring);
    out.assert_success("state");
    let row: serde_json::Value = serde_json::from_str(&out.stdout).expect("state --json");
    assert_eq!((row["email"].as_str(), row["name"].as_str()), (Some(EMAIL), Some("[redacted]")), "{row}");

    let rotated = run(&["keys", "rotate"], &keyring);
    rotated.assert_success("rotate");
    let v2 = rotated.stdout.trim().to_owned();
    assert!(v2.contains("primary=v2"), "{}", rotated.describe());
    let out = run(&["keys", "retire", "v2", "--json"], &v2);
    out.assert_failure_mentioning("retire before rewrap", "run `projector keys rewrap` first");
    let out = run(&["keys", "rewrap", "--json"], &v2);
    out.assert_success("rewrap");
    logs.borrow_mut().push_str(&out.stdout);
    let retired = run(&["keys", "retire", "v2"], &v2);
    retired.assert_success("retire after rewrap");
    let v2_only = retired.stdout.trim().to_owned();
    assert!(v2_only.ends_with("min=v2"), "{}", retired.describe());
    let out = run(&["rebuild", "user-profile", "--json"], &v2_only);
    out.assert_success("reads with v1 retired");
    assert!(out.stdout.contains("\"dead_lettered\": 0"), "{}", out.describe());

    let mut runner = ws.spawn_runner_with(&["-vvv"], &[(KEYRING_VAR, v2_only.as_str())]);
    ws.wait_caught_up(2, QUICK, || runner.logs());
    let out = run(&["keys", "shred", USER, "--json"], &v2_only);
    out.assert_success("shred");
    logs.borrow_mut().push_str(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).expect("shred --json");
    let erased = &report["erased_event"];
    assert_eq!((erased["aggregate_type"].as_str(), erased["version"].as_i64()), (Some("user"), Some(2)), "{report}");
    settle();
    // The live runner applies SubjectErased: the row it holds keeps no plaintext.
    let state = || {
        let out = run(&["state", "user-profile", USER, "--json"], &v2_only);
        serde_json::from_str::<serde_json::Value>(&out.stdout).expect("state --json")
    };
    let deadline = std::time::Instant::now() + QUICK;
    let mut row = state();
    while row["email"] != serde_json::Value::Null && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        row = state();
    }
    assert_eq!(
        (row["email"].clone(), row["name"].clone(), row["plan"].clone()),
        (serde_json::Value::Null, serde_json::Value::Null, serde_json::json!("pro")),
        "the live runner applied SubjectErased: {row}\n{}",
        runner.logs()
    );
    runner.stop_cleanly(QUICK);
    logs.borrow_mut().push_str(&runner.logs());
    let again = run(&["keys", "shred", USER, "--json"], &v2_only);
    again.assert_success("a second shred");
    let report: serde_json::Value = serde_json::from_str(&again.stdout).expect("shred --json");
    assert_eq!(report["erased_event"]["deduplicated"], true, "SubjectErased is appended once: {report}");
    run(&["rebuild", "user-profile"], &v2_only).assert_success("rebuild after the shred");
    let out = run(&["state", "user-profile", USER, "--json"], &v2_only);
    let row: serde_json::Value = serde_json::from_str(&out.stdout).expect("state --json");
    assert_eq!(
        (row["email"].clone(), row["name"].clone()),
        (serde_json::Value::Null, serde_json::Value::Null),
        "{row}"
    );
    ws.write("again.jsonl", &registered("any").replace("signup-grace", "signup-again"));
    run(&["append", "again.jsonl"], &v2_only).assert_failure_mentioning("a new event for a shredded subject", "erased");

    let logs = logs.into_inner();
    assert!(
        logs.contains("DEBUG") || logs.contains("TRACE") || logs.contains("INFO"),
        "the logs were captured: {logs}"
    );
    for secret in [EMAIL, NAME].into_iter().map(str::to_owned).chain(keys_of(&keyring)).chain(keys_of(&v2)) {
        assert!(!logs.contains(&secret), "{secret:?} appears in the logs:\n{logs}");
    }
}

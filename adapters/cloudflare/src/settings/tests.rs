//! The Worker's settings from variables: defaults, and each bad value named.

use super::*;

fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    move |name| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

#[test]
fn defaults_fill_everything_but_the_projections() {
    let s = Settings::from_vars(vars(&[("PROJECTIONS", "daily-activity, user-profile,")])).unwrap();
    assert_eq!(s.projections, vec!["daily-activity", "user-profile"]);
    assert_eq!((s.partitions, s.batch_size), (1, 1000));
    assert_eq!(s.work_budget(), Duration::from_secs(15));
    assert!(s.lease_ttl() > s.invocation_budget);
}

#[test]
fn missing_projections_are_named() {
    let e = Settings::from_vars(vars(&[])).unwrap_err();
    assert!(e.to_string().starts_with("variable PROJECTIONS is not set"), "{e}");
}

#[test]
fn an_unknown_projection_is_named_with_the_known_ones() {
    let e = Settings::from_vars(vars(&[("PROJECTIONS", "user-profile,orders")])).unwrap_err();
    let text = e.to_string();
    assert!(text.contains("orders is not one of user-profile, daily-activity"), "{text}");
}

#[test]
fn upcasting_names_only_types_with_registered_upcasters() {
    let s = Settings::from_vars(vars(&[("PROJECTIONS", "user-profile"), ("UPCASTING", " ")])).unwrap();
    assert!(s.upcasting.is_empty() && s.upcasters().is_empty());
    let s = Settings::from_vars(vars(&[("PROJECTIONS", "user-profile"), ("UPCASTING", "UserRegistered")])).unwrap();
    assert_eq!(s.upcasting, ["UserRegistered"]);
    let e = Settings::from_vars(vars(&[("PROJECTIONS", "user-profile"), ("UPCASTING", "UserRenamed")]))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("variable UPCASTING = \"UserRenamed\" is not"), "{e}");
    assert!(e.contains("UserRenamed has none (event types with upcasters: UserRegistered)"), "{e}");
}

#[test]
fn bad_numbers_and_shares_name_their_variable() {
    let e = Settings::from_vars(vars(&[("PROJECTIONS", "user-profile"), ("BATCH_SIZE", "0")])).unwrap_err();
    assert_eq!(e.to_string(), "variable BATCH_SIZE = \"0\" is not a whole number from 1 to 100000");
    let e = Settings::from_vars(vars(&[("PROJECTIONS", "user-profile"), ("BUDGET_SHARE", "1.5")])).unwrap_err();
    assert!(e.to_string().starts_with("variable BUDGET_SHARE = \"1.5\" is not a share"), "{e}");
}

#[test]
fn the_runtime_knobs_come_from_their_variables() {
    let s = Settings::from_vars(vars(&[
        ("PROJECTIONS", "user-profile"),
        ("AGGREGATE_TYPES", "user, ,account"),
        ("MAX_RETRIES", "5"),
        ("RETRY_BASE_MS", "200"),
        ("RETRY_CAP_MS", "2000"),
        ("ON_FAILURE", "stop"),
        ("GAP_TIMEOUT_MS", "60000"),
        ("CRASH_LIMIT", "7"),
        ("MEMORY_BYTES", "67108864"),
        ("LEASE_TTL_MS", "90000"),
        ("ALERT_WEBHOOK", "https://hooks.example.com/p"),
        ("DEAD_LETTER_QUEUE", "projector-user-profile-dlq"),
    ]))
    .unwrap();
    assert_eq!(s.filter.aggregate_types, ["user", "account"]);
    assert!(s.filter.event_types.is_empty());
    let ms = Duration::from_millis;
    assert_eq!(s.retry, RetryPolicy { max_retries: 5, base: ms(200), cap: ms(2000) });
    assert_eq!((s.on_failure, s.gap_timeout, s.crash_limit), (OnFailure::Stop, ms(60_000), 7));
    assert_eq!(s.window, CatchUpWindow::for_memory(64 << 20));
    assert_eq!(s.lease_ttl(), ms(90_000));
    assert_eq!(s.alert_webhook.as_deref(), Some("https://hooks.example.com/p"));
    assert_eq!(s.dead_letter_queue.as_deref(), Some("projector-user-profile-dlq"));
}

#[test]
fn the_runtime_knobs_default_as_in_projections_yaml() {
    let s = Settings::from_vars(vars(&[("PROJECTIONS", "user-profile")])).unwrap();
    assert_eq!(s.retry, RetryPolicy::default());
    assert_eq!(s.on_failure, OnFailure::Park);
    assert_eq!(s.gap_timeout, projector::config::DEFAULT_GAP_TIMEOUT);
    assert_eq!(s.crash_limit, projector::config::DEFAULT_CRASH_LIMIT);
    assert_eq!(s.window, CatchUpWindow::OFF);
    assert_eq!((s.alert_webhook.as_deref(), s.dead_letter_queue.as_deref()), (None, None));
}

#[test]
fn a_lease_must_outlive_the_invocation_and_backoff_grow_to_its_cap() {
    let base = [("PROJECTIONS", "user-profile"), ("INVOCATION_BUDGET_MS", "30000")];
    let with = |extra: (&'static str, &'static str)| {
        let mut all = base.to_vec();
        all.push(extra);
        Settings::from_vars(vars(&all)).unwrap_err().to_string()
    };
    assert_eq!(
        with(("LEASE_TTL_MS", "30000")),
        "variable LEASE_TTL_MS = \"30000\" is not a whole number from 30001 to 4294967295"
    );
    let e = with(("RETRY_CAP_MS", "50"));
    assert!(e.starts_with("variable RETRY_CAP_MS = \"50\" is not at least RETRY_BASE_MS = 100"), "{e}");
    assert_eq!(with(("ON_FAILURE", "halt")), "variable ON_FAILURE = \"halt\" is not park or stop");
    let e = with(("ALERT_WEBHOOK", "hooks.example.com"));
    assert!(e.starts_with("variable ALERT_WEBHOOK = \"hooks.example.com\" is not an http://"), "{e}");
}

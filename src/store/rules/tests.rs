use std::time::Duration;

use uuid::Uuid;

use super::*;
use crate::event::NewEvent;
use crate::read_model::{Column, ColumnType, Merge};
use crate::store::{AppendOutcome, FailureRecord, InFlight, Lease, RowChanges};

const KEY: &[Column] = &[Column { name: "id", ty: ColumnType::Uuid, nullable: false, merge: Merge::Replace }];
const COLUMNS: &[Column] = &[Column { name: "total", ty: ColumnType::BigInt, nullable: false, merge: Merge::Add }];

fn table(name: &'static str) -> &'static TableSchema {
    Box::leak(Box::new(TableSchema { name, key: KEY, columns: COLUMNS, version_column: None }))
}

fn request(aggregate: u128, data: serde_json::Value) -> AppendRequest {
    AppendRequest {
        aggregate_id: Uuid::from_u128(aggregate),
        aggregate_type: "user".into(),
        expected_version: ExpectedVersion::Exact(0),
        events: vec![NewEvent::new("UserRegistered", data)],
        idempotency_key: Some("req-1".into()),
    }
}

fn at(transaction_id: u64, position: i64) -> Checkpoint {
    Checkpoint { transaction_id, position }
}

fn lease(owner: &str) -> Lease {
    Lease {
        projection: "p".into(),
        partition: Partition { index: 1, count: 2 },
        owner: owner.into(),
        checkpoint: at(0, 10),
        parked: ParkedSet::default(),
        in_flight: None,
        crashes: 0,
    }
}

fn commit<'a>(lease: &'a Lease, table: &'static TableSchema, from: Checkpoint, to: Checkpoint) -> BatchCommit<'a> {
    BatchCommit {
        lease,
        table,
        from,
        to,
        changes: RowChanges::default(),
        events_applied: 0,
        last_event_at: None,
        lease_ttl: Duration::from_secs(10),
        dead_letters: Vec::new(),
        audit: Vec::new(),
    }
}

fn is_invalid<T: std::fmt::Debug>(result: Result<T>) -> bool {
    matches!(result, Err(StoreError::InvalidInput(_)))
}

#[test]
fn table_names_must_be_plain_and_unreserved() {
    assert!(check_table(table("user_profile")).is_ok());
    for name in ["", "events", "projection_state", "dead_letters", "sqlite_x", "pg_x", "bad name", "x;drop", "Upper"] {
        assert!(is_invalid(check_table(table(name))), "{name:?} must be refused");
    }
    assert!(is_invalid(check_table(table(Box::leak("a".repeat(64).into_boxed_str())))));
}

#[test]
fn a_table_needs_a_key_and_distinct_plain_columns() {
    let no_key = Box::leak(Box::new(TableSchema { name: "t", key: &[], columns: COLUMNS, version_column: None }));
    assert!(is_invalid(check_table(no_key)));
    let twice = Box::leak(Box::new(TableSchema { name: "t", key: KEY, columns: KEY, version_column: None }));
    assert!(is_invalid(check_table(twice)));
    const ODD: &[Column] = &[Column { name: "a b", ty: ColumnType::Text, nullable: true, merge: Merge::Replace }];
    let odd = Box::leak(Box::new(TableSchema { name: "t", key: KEY, columns: ODD, version_column: None }));
    assert!(is_invalid(check_table(odd)));
}

#[test]
fn registration_needs_a_name_and_at_least_one_partition() {
    assert!(check_registration("user-profile", table("t"), 1).is_ok());
    assert!(is_invalid(check_registration("", table("t"), 1)));
    assert!(is_invalid(check_registration("Bad Name", table("t"), 1)));
    assert!(is_invalid(check_registration("p", table("t"), 0)));
}

#[test]
fn an_empty_owner_cannot_claim() {
    assert!(is_invalid(check_owner("p", Partition::WHOLE, "")));
    assert!(check_owner("p", Partition::WHOLE, "runner-1").is_ok());
}

const LIMIT: usize = DEFAULT_MAX_PAYLOAD_BYTES;

#[test]
fn appends_need_events_and_a_valid_expected_version() {
    assert!(check_append(&request(1, serde_json::json!({})), LIMIT).is_ok());
    let mut none = request(1, serde_json::json!({}));
    none.events.clear();
    assert!(is_invalid(check_append(&none, LIMIT)));
    let mut negative = request(1, serde_json::json!({}));
    negative.expected_version = ExpectedVersion::Exact(-1);
    let Err(StoreError::InvalidInput(m)) = check_append(&negative, LIMIT) else { panic!("must be refused") };
    assert!(m.contains("invalid"), "{m}");
}

#[test]
fn a_payload_must_be_a_json_object() {
    for (payload, kind) in [
        (serde_json::json!(null), "null"),
        (serde_json::json!([1, 2]), "an array"),
        (serde_json::json!("x"), "a string"),
        (serde_json::json!(3), "a number"),
        (serde_json::json!(true), "a boolean"),
    ] {
        let Err(StoreError::InvalidInput(m)) = check_append(&request(1, payload), LIMIT) else {
            panic!("{kind} must be refused")
        };
        assert!(m.contains(kind) && m.contains("UserRegistered"), "{m}");
    }
}

#[test]
fn empty_types_and_nil_ids_are_refused() {
    let mut nil = request(0, serde_json::json!({}));
    nil.aggregate_id = Uuid::nil();
    assert!(is_invalid(check_append(&nil, LIMIT)));
    let mut no_type = request(1, serde_json::json!({}));
    no_type.aggregate_type = " ".into();
    assert!(is_invalid(check_append(&no_type, LIMIT)));
    let mut no_event_type = request(1, serde_json::json!({}));
    no_event_type.events[0].event_type = String::new();
    assert!(is_invalid(check_append(&no_event_type, LIMIT)));
    let mut nil_event = request(1, serde_json::json!({}));
    nil_event.events[0].event_id = Some(Uuid::nil());
    assert!(is_invalid(check_append(&nil_event, LIMIT)));
}

#[test]
fn a_payload_over_the_limit_is_refused_with_both_sizes() {
    let payload = serde_json::json!({ "blob": "x".repeat(100) });
    let size = payload.to_string().len();
    assert!(check_append(&request(1, payload.clone()), size).is_ok());
    let Err(StoreError::InvalidInput(m)) = check_append(&request(1, payload), size - 1) else {
        panic!("one byte over must be refused")
    };
    assert!(m.contains(&format!("{size} bytes")) && m.contains(&format!("{} bytes", size - 1)), "{m}");
}

#[test]
fn a_commit_may_not_move_the_checkpoint_back() {
    let lease = lease("me");
    assert!(check_commit(&commit(&lease, table("t"), at(0, 10), at(0, 10))).is_ok());
    assert!(check_commit(&commit(&lease, table("t"), at(0, 10), at(0, 20))).is_ok());
    assert!(is_invalid(check_commit(&commit(&lease, table("t"), at(0, 10), at(0, 9)))));
    assert!(is_invalid(check_commit(&commit(&lease, table("t"), at(5, 1), at(4, 99)))));
}

#[test]
fn a_refused_commit_is_explained_by_what_the_store_found() {
    let lease = lease("me");
    let c = commit(&lease, table("t"), at(0, 10), at(0, 20));
    let found = |table: Option<&str>, owner: Option<Option<&str>>| RefusedCommit {
        registered_table: table.map(str::to_owned),
        registered_partitions: Some(2),
        partition_owner: owner.map(|o| o.map(str::to_owned)),
    };
    assert!(matches!(diagnose_refused_commit(&c, found(None, None)), StoreError::UnknownProjection(p) if p == "p"));
    assert!(matches!(diagnose_refused_commit(&c, found(Some("other"), Some(Some("me")))), StoreError::InvalidInput(m)
        if m.contains("other")));
    assert!(matches!(diagnose_refused_commit(&c, found(Some("t"), None)), StoreError::InvalidInput(m)
        if m.contains("2 partitions")));
    assert!(matches!(diagnose_refused_commit(&c, found(Some("t"), Some(Some("you")))),
        StoreError::LeaseLost { owner, partition: 1, .. } if owner == "you"));
    assert!(matches!(diagnose_refused_commit(&c, found(Some("t"), Some(None))),
        StoreError::LeaseLost { owner, .. } if owner == "nobody"));
    assert!(matches!(
        diagnose_refused_commit(&c, found(Some("t"), Some(Some("me")))),
        StoreError::CheckpointMoved { partition: 1, .. }
    ));
}

fn stored(request: &AppendRequest) -> StoredKey {
    StoredKey {
        aggregate_id: request.aggregate_id,
        fingerprint: Some(request_fingerprint(request)),
        outcome: AppendOutcome {
            aggregate_id: request.aggregate_id,
            first_version: 1,
            last_version: 1,
            event_ids: vec![Uuid::from_u128(9)],
            positions: vec![1],
            deduplicated: false,
        },
    }
}

#[test]
fn the_same_request_under_a_used_key_returns_the_first_outcome() {
    let first = request(1, serde_json::json!({"email": "a@example.com", "name": "A"}));
    let again = request(1, serde_json::json!({"name": "A", "email": "a@example.com"}));
    let outcome = replay_idempotent("req-1", stored(&first), &again).expect("same request");
    assert!(outcome.deduplicated);
    assert_eq!(outcome.event_ids, vec![Uuid::from_u128(9)]);
}

#[test]
fn a_used_key_with_another_aggregate_or_other_events_is_refused() {
    let first = request(1, serde_json::json!({"email": "a@example.com"}));
    let other_aggregate = request(2, serde_json::json!({"email": "a@example.com"}));
    let other_payload = request(1, serde_json::json!({"email": "b@example.com"}));
    let mut other_type = first.clone();
    other_type.events[0].event_type = "UserRenamed".into();
    let mut other_version = first.clone();
    other_version.expected_version = ExpectedVersion::Any;
    for (what, request) in [
        ("aggregate", other_aggregate),
        ("payload", other_payload),
        ("type", other_type),
        ("expected version", other_version),
    ] {
        let result = replay_idempotent("req-1", stored(&first), &request);
        assert!(matches!(result, Err(StoreError::IdempotencyConflict { ref key, .. }) if key == "req-1"), "{what}");
    }
}

#[test]
fn a_key_stored_without_a_fingerprint_compares_the_aggregate_only() {
    let first = request(1, serde_json::json!({"email": "a@example.com"}));
    let legacy = StoredKey { fingerprint: None, ..stored(&first) };
    assert!(replay_idempotent("req-1", legacy.clone(), &request(1, serde_json::json!({}))).is_ok());
    assert!(replay_idempotent("req-1", legacy, &request(2, serde_json::json!({}))).is_err());
}

#[test]
fn a_partition_count_other_than_the_stored_one_is_refused_with_the_command() {
    let Err(StoreError::InvalidInput(m)) = check_partition_count("p", 4, Partition { index: 0, count: 1 }) else {
        panic!("must be refused")
    };
    assert!(m.contains("4 partitions") && m.contains("projector scale p 1"), "{m}");
    assert!(check_partition_count("p", 2, Partition { index: 1, count: 2 }).is_ok());
    assert!(matches!(missing_partition("p", None, Partition::WHOLE), StoreError::UnknownProjection(_)));
}

#[test]
fn fingerprints_tell_field_boundaries_apart() {
    let a = request(1, serde_json::json!({"ab": "c"}));
    let b = request(1, serde_json::json!({"a": "bc"}));
    assert_ne!(request_fingerprint(&a), request_fingerprint(&b));
    assert_eq!(request_fingerprint(&a), request_fingerprint(&a.clone()));
}

fn row(index: u32, count: u32, checkpoint: Checkpoint) -> PartitionRow {
    PartitionRow { index, count, checkpoint }
}

#[test]
fn rescaling_keeps_matching_rows_and_resets_aligned_ones() {
    assert_eq!(rescale("p", &[], 2).unwrap(), Rescale::Reset { start: Checkpoint::START });
    let two = [row(0, 2, at(0, 5)), row(1, 2, at(0, 9))];
    assert_eq!(rescale("p", &two, 2).unwrap(), Rescale::Keep);
    let aligned = [row(0, 2, at(3, 9)), row(1, 2, at(3, 9))];
    assert_eq!(rescale("p", &aligned, 3).unwrap(), Rescale::Reset { start: at(3, 9) });
    assert_eq!(rescale("p", &aligned[..1], 2).unwrap(), Rescale::Reset { start: at(3, 9) });
}

#[test]
fn rescaling_unaligned_partitions_is_refused_with_their_checkpoints() {
    let two = [row(0, 2, at(0, 5)), row(1, 2, at(0, 9))];
    let Err(StoreError::InvalidInput(message)) = rescale("p", &two, 3) else { panic!("must be refused") };
    assert!(message.contains("0/5") && message.contains("0/9") && message.contains("projector scale"), "{message}");
}

#[test]
fn status_follows_lag_only_between_running_and_caught_up() {
    let table = [
        (Status::Running, 0, Status::CaughtUp),
        (Status::Running, 3, Status::Running),
        (Status::CaughtUp, 0, Status::CaughtUp),
        (Status::CaughtUp, 3, Status::Running),
        (Status::Stopped, 0, Status::Stopped),
        (Status::Failed, 3, Status::Failed),
        (Status::Rebuilding, 0, Status::Rebuilding),
    ];
    for (stored, lag, expected) in table {
        assert_eq!(stored.with_lag(lag), expected, "{stored} with lag {lag}");
    }
}

#[test]
fn a_failed_status_or_an_error_text_counts_an_error() {
    assert!(Status::Failed.counts_as_error(None));
    assert!(Status::Stopped.counts_as_error(Some("stopped at event x")));
    assert!(!Status::Running.counts_as_error(None));
}

#[test]
fn a_rebuild_counts_its_events_once_per_projection() {
    let shares: i64 = (0..4).map(|p| rebuild_applied_share(p, 1_000)).sum();
    assert_eq!(shares, 1_000);
}

#[test]
fn the_parked_set_is_keyed_by_aggregate() {
    let rows = [
        Parked { aggregate_id: Uuid::from_u128(1), from_version: 3, dead_letter_id: 7 },
        Parked { aggregate_id: Uuid::from_u128(2), from_version: 1, dead_letter_id: 8 },
    ];
    let set = ParkedSet::from_rows(4, rows);
    assert_eq!(set.epoch, 4);
    assert_eq!(set.by_aggregate[&Uuid::from_u128(1)].from_version, 3);
    assert_eq!(set.by_aggregate.len(), 2);
}

#[test]
fn lag_is_measured_from_the_store_clock_and_never_negative() {
    let now = chrono::DateTime::parse_from_rfc3339("2026-03-01T12:00:10Z").unwrap().to_utc();
    assert_eq!(lag_seconds(now, None), 0.0, "nothing to read is no lag");
    assert_eq!(lag_seconds(now, Some(now - chrono::Duration::milliseconds(2500))), 2.5);
    assert_eq!(lag_seconds(now, Some(now + chrono::Duration::seconds(30))), 0.0, "a later record is no lag");
}

#[test]
fn only_a_running_status_clears_the_last_error() {
    assert!(Status::Running.clears_last_error());
    assert!(Status::CaughtUp.clears_last_error());
    assert!(!Status::Failed.clears_last_error());
    assert!(!Status::Stopped.clears_last_error());
}

#[test]
fn registering_keeps_the_stored_partition_count() {
    assert!(check_registered_partitions("p", &[], 3).is_ok(), "a new projection takes any count");
    let two = [row(0, 2, at(0, 5)), row(1, 2, at(0, 5))];
    assert!(check_registered_partitions("p", &two, 2).is_ok());
    let err = check_registered_partitions("p", &two, 3).unwrap_err().to_string();
    for needle in ["says `partitions: 3`", "the store has 2", "`partitions: 2`", "`projector scale p 3`"] {
        assert!(err.contains(needle), "{needle:?} in {err}");
    }
}

#[test]
fn a_missing_or_narrower_table_under_a_moved_checkpoint_needs_a_rebuild() {
    let t = table("totals");
    let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(table_fit(t, &[]), TableFit::Missing);
    assert_eq!(table_fit(t, &names(&["ID", "total", "other"])), TableFit::Fits, "names compare without case");
    assert_eq!(table_fit(t, &names(&["id"])), TableFit::Lacks(vec!["total".into()]));

    let fresh = [row(0, 1, Checkpoint::START)];
    let moved = [row(0, 2, Checkpoint::START), row(1, 2, at(0, 9))];
    assert_eq!(needs_rebuild(t, &TableFit::Missing, &[]), None, "a new projection gets its table");
    assert_eq!(needs_rebuild(t, &TableFit::Missing, &fresh), None, "nothing applied yet: create it");
    assert_eq!(needs_rebuild(t, &TableFit::Fits, &moved), None);
    let why = needs_rebuild(t, &TableFit::Missing, &moved).expect("needs a rebuild");
    assert!(why.contains("totals is missing") && why.contains("projector rebuild"), "{why}");
    let why = needs_rebuild(t, &TableFit::Lacks(vec!["total".into()]), &moved).expect("needs a rebuild");
    assert!(why.contains("lacks the column(s) total"), "{why}");
}

#[test]
fn missing_versions_names_the_first_and_last_hole() {
    assert_eq!(missing_versions(1, 4, []), Some((2, 4)));
    assert_eq!(missing_versions(1, 4, [2, 3, 4]), None);
    assert_eq!(missing_versions(1, 4, [4, 2]), Some((3, 3)));
    assert_eq!(missing_versions(1, 5, [2, 5]), Some((3, 4)));
    assert_eq!(missing_versions(1, i64::MAX - 1, [2]), Some((3, i64::MAX - 1)));
    assert_eq!(missing_versions(3, 3, []), None);
}

#[test]
fn an_append_past_the_largest_version_is_refused() {
    let id = Uuid::from_u128(9);
    assert_eq!(last_appended_version(id, 4, 2).unwrap(), 6);
    let err = last_appended_version(id, i64::MAX, 1).unwrap_err().to_string();
    assert!(err.contains(&i64::MAX.to_string()) && err.contains(&id.to_string()), "{err}");
}

#[test]
fn a_gap_waits_out_its_timeout_by_the_attempt_clock() {
    let first = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
    let record = |secs| FailureRecord {
        attempts: 2,
        first_failed_at: first,
        last_failed_at: first + chrono::Duration::seconds(secs),
    };
    assert!(!gap_waited_out(&record(29), std::time::Duration::from_secs(30)));
    assert!(gap_waited_out(&record(30), std::time::Duration::from_secs(30)));
    assert!(gap_waited_out(&record(0), std::time::Duration::ZERO));
}

#[test]
fn a_batch_in_flight_at_the_crash_limit_is_halved_until_one_event_is_left() {
    let batch = |events| Some(InFlight { to: at(0, 40), events });
    assert_eq!(crash_plan(None, 5, 3), CrashPlan::Normal);
    assert_eq!(crash_plan(batch(8), 2, 3), CrashPlan::Normal);
    assert_eq!(crash_plan(batch(8), 3, 3), CrashPlan::Probe { limit: 4, until: at(0, 40) });
    assert_eq!(crash_plan(batch(3), 4, 3), CrashPlan::Probe { limit: 1, until: at(0, 40) });
    assert_eq!(crash_plan(batch(1), 3, 3), CrashPlan::Isolated);
    let mut claimed = lease("r");
    assert_eq!(crashes_at_claim(&claimed), 0);
    claimed.crashes = 2;
    claimed.in_flight = batch(8);
    assert_eq!(crashes_at_claim(&claimed), 3, "a batch still in flight at the claim is one more crash");
}

//! The field-encryption suite: sealed appends, what a projection with and without a
//! grant sees, rotation and rewrapping, crypto-shredding, and events whose encrypted
//! fields cannot be read. Run on each store by [`encryption_tests!`](crate::encryption_tests);
//! the failure cases are in [`crate::encryption_failures`].

use std::collections::BTreeMap;

use chrono::Utc;
use projection_user_profile::{Profile, UserProfile};
use projector::config::EncryptionConfig;
use projector::crypto::{Keyring, REDACTED};
use projector::encryption::{rewrap_all, Decryption, SealError, Sealer};
use projector::store::keys::{AuditOperation, KeyLookup, Provisioned};
use projector::{
    AppendOutcome, AppendRequest, BatchRunner, DeadLetterFilter, DomainEvent, EventFilter, ExpectedVersion, NewEvent,
    Partition, ProjectionHandler, Rebuild, StoreError,
};
use serde_json::json;
use uuid::Uuid;

use crate::contract::{read_everything, settle, stored_profiles};
use crate::failures::FailureStore;

pub const ADA_EMAIL: &str = "ada.lovelace@example.com";
pub const ADA_NEW_EMAIL: &str = "countess.lovelace@example.org";
pub const ADA_NAME: &str = "Augusta Ada King";
pub const BOB_EMAIL: &str = "bob.babbage@example.net";
pub const BOB_NAME: &str = "Charles Babbage";
pub const BOB_NEW_NAME: &str = "Charles B. Babbage";
/// Every personal value these checks write: none may show up anywhere but decrypted
/// in a granted read model.
pub const PII: &[&str] = &[ADA_EMAIL, ADA_NEW_EMAIL, ADA_NAME, BOB_EMAIL, BOB_NAME, BOB_NEW_NAME];

/// The fields sealed at append, as `projections.yaml` would say.
pub fn config() -> EncryptionConfig {
    let mut config = EncryptionConfig::default();
    config.fields.insert("UserRegistered".into(), vec!["email".into(), "name".into()]);
    config.fields.insert("UserEmailChanged".into(), vec!["email".into()]);
    config.fields.insert("UserRenamed".into(), vec!["name".into()]);
    config
}

pub fn user(n: u128) -> Uuid {
    Uuid::from_u128(0xC0DE_0000_0000_0000_0000 + n * 0x9E37_79B9)
}

pub fn granted(keyring: &Keyring, paths: &[&str]) -> Decryption {
    let paths = paths.iter().map(|p| (*p).to_owned());
    Decryption::granted(keyring.clone(), paths, &config(), UserProfile.name(), Utc::now)
}

/// One sealed append of one user event.
pub async fn seal<S: FailureStore>(
    store: &S,
    sealer: &Sealer<'_>,
    id: Uuid,
    event_type: &str,
    data: serde_json::Value,
    expected: ExpectedVersion,
) -> Result<AppendOutcome, SealError> {
    let request = AppendRequest {
        aggregate_id: id,
        aggregate_type: "user".into(),
        expected_version: expected,
        events: vec![NewEvent::new(event_type, data)],
        idempotency_key: None,
    };
    sealer.append(store, request).await
}

/// Ada registers and changes her e-mail; Bob registers and changes his name. Returns
/// the last append (settled: every event is below the read horizon).
pub async fn two_users<S: FailureStore>(store: &S, keyring: &Keyring) -> AppendOutcome {
    let config = config();
    let sealer = Sealer::new(keyring, &config, "writer");
    let (ada, bob) = (user(1), user(2));
    let any = ExpectedVersion::Any;
    let registered = |email, name| json!({"email": email, "name": name, "plan": "pro"});
    seal(store, &sealer, ada, "UserRegistered", registered(ADA_EMAIL, ADA_NAME), any).await.expect("ada registers");
    seal(store, &sealer, bob, "UserRegistered", registered(BOB_EMAIL, BOB_NAME), ExpectedVersion::Exact(0))
        .await
        .expect("bob registers");
    seal(store, &sealer, ada, "UserEmailChanged", json!({"email": ADA_NEW_EMAIL}), ExpectedVersion::Exact(1))
        .await
        .expect("ada's new e-mail");
    let last = seal(store, &sealer, bob, "UserRenamed", json!({"name": BOB_NEW_NAME}), any).await.expect("renamed");
    settle(store, &last).await;
    last
}

/// The read model the plaintext gives.
pub fn oracle() -> BTreeMap<Uuid, (Profile, i64)> {
    let profile = |email: &str, name: &str| Profile {
        email: Some(email.into()),
        name: Some(name.into()),
        plan: Some("pro".into()),
        active: true,
    };
    BTreeMap::from([(user(1), (profile(ADA_NEW_EMAIL, ADA_NAME), 2)), (user(2), (profile(BOB_EMAIL, BOB_NEW_NAME), 2))])
}

pub async fn register<S: FailureStore>(store: &S) {
    let handler = UserProfile;
    store.register(handler.name(), handler.schema(), &handler.filter(), 1).await.expect("register");
}

/// Runs the live runner to the head with `decryption`; returns the events dead-lettered.
pub async fn run_live<S: FailureStore>(store: &S, decryption: Decryption) -> u64 {
    let lease = store
        .claim(UserProfile.name(), Partition::WHOLE, "runner", std::time::Duration::from_secs(30))
        .await
        .expect("claim")
        .expect("the partition is free");
    let mut runner = BatchRunner::new(&UserProfile, store, &EventFilter::all(), lease).decryption(decryption);
    let outcome = runner.catch_up().await.expect("catch up");
    store.release(runner.lease()).await.expect("release");
    outcome.dead_lettered
}

pub async fn rebuild<S: FailureStore>(store: &S, decryption: Decryption) -> u64 {
    let rebuild = Rebuild::new(&UserProfile, &EventFilter::all()).decryption(decryption);
    rebuild.run(store, |_: u64, _| {}).await.expect("rebuild").dead_lettered
}

pub async fn profiles<S: FailureStore>(store: &S) -> BTreeMap<Uuid, (Profile, i64)> {
    stored_profiles(store, &[user(1), user(2), user(3), user(4), user(5)]).await
}

/// Panics when any stored text this suite can reach holds a personal value: the events'
/// payloads and metadata, the dead letters, and `also` (read-model rows, audit rows).
pub async fn assert_no_plaintext<S: FailureStore>(store: &S, also: &str) {
    let events = read_everything(store, &EventFilter::all(), Partition::WHOLE, 500).await;
    let letters = store.list(&DeadLetterFilter::default()).await.expect("list dead letters");
    let audit = store.audit_log(None, 10_000).await.expect("audit log");
    let mut texts: Vec<String> =
        events.iter().map(|e| format!("{} {}", e.event_data.get(), e.metadata.get())).collect();
    texts.extend(letters.iter().map(|l| format!("{l:?}")));
    texts.extend(audit.iter().map(|a| format!("{a:?}")));
    texts.push(also.to_owned());
    for text in &texts {
        for pii in PII {
            assert!(!text.contains(pii), "{pii:?} is stored in the clear: {text}");
        }
    }
}

fn is_sealed(e: &DomainEvent) -> bool {
    ["UserRegistered", "UserEmailChanged", "UserRenamed"].contains(&e.event_type.as_str())
}

/// Stored events hold envelopes only; a projection without a grant reads redacted
/// values; one granted both fields reads the plaintext (the read model equals the
/// plaintext oracle); one granted only e-mail reads names redacted. Every seal and every
/// decrypt is audited.
pub async fn only_a_granted_projection_sees_plaintext<S: FailureStore>(store: &S) {
    let keyring = Keyring::generate().expect("keyring");
    two_users(store, &keyring).await;
    let events = read_everything(store, &EventFilter::all(), Partition::WHOLE, 100).await;
    assert_eq!(events.len(), 4);
    for e in &events {
        assert!(is_sealed(e) && !e.encrypted_fields.is_empty(), "every event is sealed: {e:?}");
        assert!(e.metadata.get().contains("\"encryption\""), "the subject is recorded: {}", e.metadata.get());
    }
    assert_no_plaintext(store, "").await;

    register(store).await;
    assert_eq!(run_live(store, Decryption::none()).await, 0);
    let redacted = profiles(store).await;
    for (user, (profile, _)) in &redacted {
        assert_eq!(profile.email.as_deref(), Some(REDACTED), "{user}: e-mail without a grant");
        assert_eq!(profile.name.as_deref(), Some(REDACTED), "{user}: name without a grant");
        assert_eq!(profile.plan.as_deref(), Some("pro"), "fields not encrypted read as they are");
    }
    assert_no_plaintext(store, &format!("{redacted:?}")).await;

    assert_eq!(rebuild(store, granted(&keyring, &["email", "name"])).await, 0);
    assert_eq!(profiles(store).await, oracle(), "a granted read model equals the plaintext oracle");

    assert_eq!(rebuild(store, granted(&keyring, &["email"])).await, 0);
    let partial = profiles(store).await;
    assert_eq!(partial[&user(1)].0.email.as_deref(), Some(ADA_NEW_EMAIL));
    assert_eq!(partial[&user(1)].0.name.as_deref(), Some(REDACTED), "a field not granted stays redacted");

    let audit = store.audit_log(None, 1000).await.expect("audit");
    let rows = |op: AuditOperation| audit.iter().filter(move |a| a.record.operation == op);
    let sealed: u64 = rows(AuditOperation::Encrypt).map(|a| a.record.count).sum();
    assert_eq!(sealed, 4, "one encrypt row per sealed event: {audit:?}");
    assert!(rows(AuditOperation::Encrypt).all(|a| a.record.event_id.is_some() && a.record.actor == "writer"));
    assert_eq!(rows(AuditOperation::Provision).count(), 2, "one key per subject");
    let decrypts: Vec<_> = rows(AuditOperation::Decrypt).collect();
    assert!(
        !decrypts.is_empty()
            && decrypts.iter().all(|a| a.record.actor == "user-profile" && a.record.error_class.is_none())
    );
    for subject in [user(1).to_string(), user(2).to_string()] {
        assert!(decrypts.iter().any(|a| a.record.subject.as_deref() == Some(&subject)), "{subject} decrypts audited");
    }
}

/// An idempotent repeat of a sealed append is recognised (fresh nonces, no second
/// event), also with `any` after another append; the same key with other personal data
/// is refused.
pub async fn a_repeated_sealed_append_is_recognised<S: FailureStore>(store: &S) {
    let keyring = Keyring::generate().expect("keyring");
    let config = config();
    let sealer = Sealer::new(&keyring, &config, "writer");
    let ada = user(1);
    let request = |email: &str| AppendRequest {
        aggregate_id: ada,
        aggregate_type: "user".into(),
        expected_version: ExpectedVersion::Any,
        events: vec![NewEvent::new("UserRegistered", json!({"email": email, "name": ADA_NAME}))],
        idempotency_key: Some("signup-ada".into()),
    };
    let first = sealer.append(store, request(ADA_EMAIL)).await.expect("first");
    assert!(!first.deduplicated);
    let again = sealer.append(store, request(ADA_EMAIL)).await.expect("repeat");
    assert!(again.deduplicated, "the repeat is recognised: {again:?}");
    assert_eq!(again.event_ids, first.event_ids);
    seal(store, &sealer, ada, "UserRenamed", json!({"name": "Ada"}), ExpectedVersion::Any).await.expect("rename");
    let later = sealer.append(store, request(ADA_EMAIL)).await.expect("repeat after another append");
    assert!(later.deduplicated && later.event_ids == first.event_ids, "{later:?}");
    let events = store.read_aggregate(ada, projector::ReadBound::All).await.expect("read");
    assert_eq!(events.len(), 2, "no second registration: {events:?}");
    match sealer.append(store, request(BOB_EMAIL)).await {
        Err(SealError::Store(StoreError::IdempotencyConflict { .. })) => {}
        other => panic!("other personal data under the same key is another request: {other:?}"),
    }
    let encrypts: u64 = store
        .audit_log(None, 100)
        .await
        .expect("audit")
        .iter()
        .filter(|a| a.record.operation == AuditOperation::Encrypt)
        .map(|a| a.record.count)
        .sum();
    assert_eq!(encrypts, 2, "a recognised repeat writes no audit row of its own");
}

/// Data sealed under KEK v1 reads after v2 became primary; below the minimum version a
/// read is refused, naming the retired key; a rewrap moves every key to v2, after which
/// v1 can be retired and everything still reads.
pub async fn rotation_keeps_data_readable_and_rewrap_moves_every_key<S: FailureStore>(store: &S) {
    let v1 = Keyring::generate().expect("keyring");
    two_users(store, &v1).await;
    let v2 = Keyring::parse(&v1.rotate().expect("rotate")).expect("v2");
    assert_eq!((v2.primary_version(), v2.min_version()), (2, 1));
    register(store).await;
    assert_eq!(rebuild(store, granted(&v2, &["email", "name"])).await, 0);
    assert_eq!(profiles(store).await, oracle(), "v1 wraps open with the rotated keyring");

    let retired = Keyring::parse(&v2.with_min_version(2).expect("min v2")).expect("retired");
    let reading = projector::upcast::Reading::new(EventFilter::all(), Default::default())
        .decrypting(granted(&retired, &["email", "name"]));
    let refused = projector::runtime::state_read_at(&UserProfile, store, &reading, &user(1), Some(user(1)), None).await;
    let message = refused.expect_err("a key wrapped under a retired KEK does not open").to_string();
    assert!(message.contains("key-encryption key v1 is retired (the minimum is v2)"), "{message}");

    let outcome = rewrap_all(store, &v2, "operator", |_| {}).await.expect("rewrap");
    assert_eq!((outcome.rewrapped, outcome.changed_meanwhile, outcome.failed.len()), (2, 0, 0), "{outcome:?}");
    assert!(store.keys_to_rewrap(2, None, 100).await.expect("keys").is_empty(), "every key is under v2");
    let again = rewrap_all(store, &v2, "operator", |_| {}).await.expect("rewrap again");
    assert_eq!(again.rewrapped, 0, "a second run finds nothing to do");
    let rewraps = store.audit_log(None, 100).await.expect("audit");
    assert_eq!(rewraps.iter().filter(|a| a.record.operation == AuditOperation::Rewrap).count(), 2);
    // What `keys rotate` and `keys retire` record, beside the keyring they write.
    let keyring_rows = [AuditOperation::Rotate, AuditOperation::Retire]
        .map(|op| projector::AuditRecord::new(op, "operator").key_versions(None, Some(2)));
    store.record_audit(&keyring_rows).await.expect("keyring changes are audited");
    let latest = store.audit_log(None, 2).await.expect("audit");
    let ops: Vec<_> = latest.iter().map(|a| (a.record.operation, a.record.kek_version)).collect();
    assert_eq!(ops, [(AuditOperation::Retire, Some(2)), (AuditOperation::Rotate, Some(2))]);

    assert_eq!(rebuild(store, granted(&retired, &["email", "name"])).await, 0);
    assert_eq!(profiles(store).await, oracle(), "after the rewrap v1 is no longer needed");
}

/// Two rewraps at once (two connections) move every key once and damage none.
pub async fn concurrent_rewraps_corrupt_nothing<S: FailureStore>(a: &S, b: &S) {
    let v1 = Keyring::generate().expect("keyring");
    let config = config();
    let sealer = Sealer::new(&v1, &config, "writer");
    let mut last = None;
    for n in 1..=40 {
        let data = json!({"email": format!("user{n}@example.com"), "name": format!("User {n}")});
        last = Some(seal(a, &sealer, user(n), "UserRegistered", data, ExpectedVersion::Any).await.expect("seal"));
    }
    settle(a, &last.expect("appended")).await;
    let v2 = Keyring::parse(&v1.rotate().expect("rotate")).expect("v2");
    let (x, y) =
        futures_util::future::join(rewrap_all(a, &v2, "operator-a", |_| {}), rewrap_all(b, &v2, "operator-b", |_| {}))
            .await;
    let (x, y) = (x.expect("rewrap a"), y.expect("rewrap b"));
    assert!(x.failed.is_empty() && y.failed.is_empty(), "{x:?} {y:?}");
    assert_eq!(x.rewrapped + y.rewrapped, 40, "each key moved exactly once: {x:?} {y:?}");
    let only_v2 = Keyring::parse(&v2.with_min_version(2).expect("min v2")).expect("v2 only");
    let subjects: Vec<String> = (1..=40).map(|n| user(n).to_string()).collect();
    for (subject, lookup) in subjects.iter().zip(a.subject_keys(&subjects).await.expect("keys")) {
        let KeyLookup::Found(key) = lookup else { panic!("{subject}: {lookup:?}") };
        assert_eq!(key.wrapped.kek_version(), 2);
        only_v2.unwrap(&key.wrapped, subject).expect("every rewrapped key opens under v2 alone");
    }
}

/// A shredded subject: no key rows remain, no new key can be provisioned, its fields
/// read as redacted (not as an error), and a rebuilt read model holds none of its
/// plaintext; the shred and the refused reads are audited.
pub async fn a_shredded_subject_reads_redacted_and_gets_no_new_key<S: FailureStore>(store: &S) {
    let keyring = Keyring::generate().expect("keyring");
    two_users(store, &keyring).await;
    register(store).await;
    // One decryption, its cache warm with every subject's key, lives through the shred.
    let warm = granted(&keyring, &["email", "name"]);
    assert_eq!(run_live(store, warm.clone()).await, 0);
    assert_eq!(profiles(store).await, oracle());

    let ada = user(1).to_string();
    let shredded = store.shred_subject(&ada, "operator").await.expect("shred");
    assert_eq!((shredded.keys_deleted, shredded.already_erased), (1, false));
    let remaining = store.keys_to_rewrap(i32::MAX as u32, None, 1000).await.expect("every key");
    assert!(remaining.iter().all(|k| k.subject != ada), "no key row of the subject remains");
    assert_eq!(store.subject_keys(std::slice::from_ref(&ada)).await.expect("lookup"), [KeyLookup::Erased]);
    let wrapped = keyring.wrap(&projector::crypto::Dek::generate().expect("dek"), &ada).expect("wrap");
    assert_eq!(store.provision_subject_key(&ada, &wrapped, "writer").await.expect("provision"), Provisioned::Erased);

    let reading = projector::upcast::Reading::new(EventFilter::all(), Default::default()).decrypting(warm);
    let read = projector::runtime::state_read_at(&UserProfile, store, &reading, &user(1), Some(user(1)), None).await;
    let (row, _) = read.expect("replay").expect("a row");
    assert_eq!(row.email.as_deref(), Some(REDACTED), "a cached key is not used past the shred");

    let config = config();
    let sealer = Sealer::new(&keyring, &config, "writer");
    let new =
        seal(store, &sealer, user(1), "UserEmailChanged", json!({"email": ADA_EMAIL}), ExpectedVersion::Any).await;
    assert!(matches!(new, Err(SealError::Erased { .. })), "a new event for the subject is refused: {new:?}");
    let message = new.expect_err("refused").to_string();
    assert!(message.contains("erased") && !message.contains(ADA_EMAIL), "{message}");

    assert_eq!(rebuild(store, granted(&keyring, &["email", "name"])).await, 0, "redacted, not failed");
    let rebuilt = profiles(store).await;
    assert_eq!(rebuilt[&user(1)].0.email.as_deref(), Some(REDACTED));
    assert_eq!(rebuilt[&user(1)].0.name.as_deref(), Some(REDACTED));
    assert_eq!(rebuilt[&user(2)], oracle()[&user(2)], "other subjects are untouched");
    let ada_pii = [ADA_EMAIL, ADA_NEW_EMAIL, ADA_NAME];
    let shown = format!("{rebuilt:?}");
    assert!(
        ada_pii.iter().all(|pii| !shown.contains(pii)),
        "the read model holds no plaintext of the subject: {shown}"
    );
    let letters = format!("{:?}", store.list(&DeadLetterFilter::default()).await.expect("letters"));
    assert!(ada_pii.iter().all(|pii| !letters.contains(pii)), "{letters}");

    let audit = store.audit_log(Some(&ada), 100).await.expect("audit");
    assert!(audit.iter().any(|a| a.record.operation == AuditOperation::Shred && a.record.actor == "operator"));
    assert!(audit.iter().any(|a| a.record.operation == AuditOperation::Denied && a.record.actor == "user-profile"));
}

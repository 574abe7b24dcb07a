//! The subject-key conformance suite: what every store does with wrapped data keys,
//! erasure fences and crypto audit rows. Run on each store by [`keys_tests!`](crate::keys_tests).

use projector::crypto::{Dek, Keyring, WrappedDek};
use projector::store::keys::{AuditOperation, AuditRecord, KeyLookup, Provisioned, SubjectKeys};
use projector::StoreError;
use uuid::Uuid;

fn wrapped(keyring: &Keyring, subject: &str) -> WrappedDek {
    keyring.wrap(&Dek::generate().expect("random"), subject).expect("wrap")
}

fn key_of(lookup: &KeyLookup) -> &WrappedDek {
    match lookup {
        KeyLookup::Found(key) => &key.wrapped,
        other => panic!("expected a key, got {other:?}"),
    }
}

/// The first provision stores its candidate; later ones get the stored key back.
pub async fn provisioning_stores_one_key_and_returns_it_after<S: SubjectKeys>(store: &S) {
    let keyring = Keyring::generate().expect("keyring");
    let first = wrapped(&keyring, "user-1");
    let created = store.provision_subject_key("user-1", &first, "writer").await.expect("provision");
    let Provisioned::Created(key) = created else { panic!("a new subject gets its candidate: {created:?}") };
    assert_eq!((key.dek_version, &key.wrapped), (1, &first));

    let second = wrapped(&keyring, "user-1");
    let again = store.provision_subject_key("user-1", &second, "writer").await.expect("provision again");
    let Provisioned::Existing(key) = again else { panic!("a known subject keeps its key: {again:?}") };
    assert_eq!(key.wrapped, first, "the second candidate is not stored");

    let found = store.subject_keys(&["user-1".into(), "user-2".into()]).await.expect("lookup");
    assert_eq!(key_of(&found[0]), &first);
    assert_eq!(found[1], KeyLookup::Missing);
    keyring.unwrap(key_of(&found[0]), "user-1").expect("the stored wrap opens for its subject");

    let audit = store.audit_log(Some("user-1"), 10).await.expect("audit");
    let provisions: Vec<_> = audit.iter().filter(|e| e.record.operation == AuditOperation::Provision).collect();
    assert_eq!(provisions.len(), 1, "one provision row: {audit:?}");
    let row = &provisions[0].record;
    assert_eq!((row.dek_version, row.kek_version, row.actor.as_str()), (Some(1), Some(1), "writer"));
}

/// Shredding deletes the keys, fences the subject and is idempotent.
pub async fn shredding_deletes_keys_and_fences_the_subject<S: SubjectKeys>(store: &S) {
    let keyring = Keyring::generate().expect("keyring");
    store.provision_subject_key("user-9", &wrapped(&keyring, "user-9"), "writer").await.expect("provision");
    let shred = store.shred_subject("user-9", "alice").await.expect("shred");
    assert_eq!((shred.keys_deleted, shred.already_erased), (1, false));
    assert_eq!(store.subject_keys(&["user-9".into()]).await.expect("lookup"), vec![KeyLookup::Erased]);

    let after = store.provision_subject_key("user-9", &wrapped(&keyring, "user-9"), "writer").await;
    assert_eq!(after.expect("provision after shred"), Provisioned::Erased, "no new key for an erased subject");
    assert_eq!(store.subject_keys(&["user-9".into()]).await.expect("lookup"), vec![KeyLookup::Erased]);

    let twice = store.shred_subject("user-9", "alice").await.expect("shred again");
    assert_eq!((twice.keys_deleted, twice.already_erased), (0, true));

    let never = store.shred_subject("never-provisioned", "alice").await.expect("shred an unknown subject");
    assert_eq!((never.keys_deleted, never.already_erased), (0, false));
    let late = store.provision_subject_key("never-provisioned", &wrapped(&keyring, "x"), "writer").await;
    assert_eq!(late.expect("provision"), Provisioned::Erased, "the fence holds for a subject shredded first");

    let shreds = store.audit_log(Some("user-9"), 10).await.expect("audit");
    let shreds: Vec<_> = shreds.iter().filter(|e| e.record.operation == AuditOperation::Shred).collect();
    assert_eq!(shreds.len(), 2, "every shred is audited");
    assert_eq!(shreds[0].record.actor, "alice");
}

/// Rewrapping pages through every key not under the primary, once, and a replace is a
/// compare-and-set on the stored wrap.
pub async fn rewrap_walks_every_key_once_and_compares_before_replacing<S: SubjectKeys>(store: &S) {
    let v1 = Keyring::generate().expect("keyring");
    let subjects: Vec<String> = (0..5).map(|i| format!("subject-{i}")).collect();
    for subject in &subjects {
        store.provision_subject_key(subject, &wrapped(&v1, subject), "writer").await.expect("provision");
    }
    let v2 = Keyring::parse(&v1.rotate().expect("rotate")).expect("rotated keyring");
    assert_eq!(v2.primary_version(), 2);

    let mut seen = Vec::new();
    let mut after: Option<(String, u32)> = None;
    loop {
        let page =
            store.keys_to_rewrap(2, after.as_ref().map(|(s, v)| (s.as_str(), *v)), 2).await.expect("a page of keys");
        let Some(last) = page.last() else { break };
        after = Some((last.subject.clone(), last.dek_version));
        for key in page {
            let rewrapped = v2.rewrap(&key.wrapped, &key.subject).expect("rewrap");
            assert!(store.replace_wrap(&key, &rewrapped, "operator").await.expect("replace"));
            assert!(
                !store.replace_wrap(&key, &rewrapped, "operator").await.expect("replace a stale wrap"),
                "a wrap that changed meanwhile is not replaced"
            );
            seen.push(key.subject);
        }
    }
    assert_eq!(seen, subjects, "every key once, in key order");
    assert!(store.keys_to_rewrap(2, None, 10).await.expect("list").is_empty(), "nothing left under v1");

    let keys = store.subject_keys(&subjects).await.expect("lookup");
    for (subject, key) in subjects.iter().zip(&keys) {
        assert_eq!(key_of(key).kek_version(), 2);
        v2.unwrap(key_of(key), subject).expect("the rewrapped key opens under v2");
    }
    let rewraps = store.audit_log(None, 100).await.expect("audit");
    assert_eq!(rewraps.iter().filter(|e| e.record.operation == AuditOperation::Rewrap).count(), 5);
}

/// Audit rows come back as written, newest first; bad rows and subjects are refused.
pub async fn audit_rows_round_trip_and_bad_input_is_refused<S: SubjectKeys>(store: &S) {
    let event = Uuid::from_u128(7);
    let decrypts = AuditRecord {
        field_paths: vec!["email".into(), "address.street".into()],
        event_id: Some(event),
        count: 3,
        ..AuditRecord::new(AuditOperation::Decrypt, "user-profile").subject("user-1").key_versions(Some(1), Some(1))
    };
    let denied = AuditRecord {
        error_class: Some("no_grant".into()),
        ..AuditRecord::new(AuditOperation::Denied, "daily-activity").subject("user-1")
    };
    store.record_audit(&[decrypts.clone(), denied.clone()]).await.expect("record");
    let log = store.audit_log(Some("user-1"), 10).await.expect("audit");
    let records: Vec<_> = log.iter().map(|e| e.record.clone()).collect();
    assert_eq!(records, vec![denied.clone(), decrypts], "newest first, every column kept");
    assert_eq!(log[0].record.outcome(), "failed");
    assert!(log[0].id > log[1].id);
    assert!(store.audit_log(Some("user-2"), 10).await.expect("audit").is_empty());

    let refused = store.record_audit(&[AuditRecord::new(AuditOperation::Encrypt, "")]).await;
    assert!(matches!(refused, Err(StoreError::InvalidInput(_))), "{refused:?}");
    let keyring = Keyring::generate().expect("keyring");
    let refused = store.provision_subject_key("", &wrapped(&keyring, ""), "writer").await;
    assert!(matches!(refused, Err(StoreError::InvalidInput(_))), "{refused:?}");
    let refused = store.shred_subject("user-1", " ").await;
    assert!(matches!(refused, Err(StoreError::InvalidInput(_))), "{refused:?}");
}

/// Two handles (two connections) provisioning the same subjects at the same moment:
/// each subject ends with one key, the one both writers were given.
pub async fn concurrent_provisioning_ends_with_one_key<S: SubjectKeys>(a: &S, b: &S) {
    let keyring = Keyring::generate().expect("keyring");
    for i in 0..20 {
        let subject = format!("raced-{i}");
        let (ka, kb) = (wrapped(&keyring, &subject), wrapped(&keyring, &subject));
        let (ra, rb) = futures_util::future::join(
            a.provision_subject_key(&subject, &ka, "writer-a"),
            b.provision_subject_key(&subject, &kb, "writer-b"),
        )
        .await;
        let key = match (ra.expect("provision a"), rb.expect("provision b")) {
            (Provisioned::Created(x), Provisioned::Existing(y))
            | (Provisioned::Existing(y), Provisioned::Created(x)) => {
                assert_eq!(x, y, "the later writer gets the first writer's key");
                x
            }
            other => panic!("{subject}: one writer creates, the other finds it: {other:?}"),
        };
        let stored = a.subject_keys(std::slice::from_ref(&subject)).await.expect("lookup");
        assert_eq!(key_of(&stored[0]), &key.wrapped);
    }
}

//! Events whose encrypted fields cannot be read, written around the store's append (by
//! SQL): a tampered ciphertext, an envelope in a field not listed, a listed field that
//! holds plaintext. Each is dead-lettered and parks its aggregate; every other
//! aggregate goes on; nothing of it is read as plaintext.

use projection_user_profile::UserProfile;
use projector::config::EncryptionConfig;
use projector::crypto::Keyring;
use projector::encryption::Sealer;
use projector::{DeadLetterFilter, ExpectedVersion, ProjectionHandler, ReadBound};
use projector_embedded::EmbeddedStore;
use projector_postgres::PgStore;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::contract::settle;
use crate::encryption::{config, granted, profiles, register, run_live, seal, user, ADA_EMAIL};
use crate::failures::FailureStore;
use crate::stored_events::RawSql;

/// Rewriting a stored event's payload and listing, in the store's own SQL.
pub trait Tamper: RawSql {
    fn rewrite_sql(event_id: Uuid, data: &Value, listed: &[&str]) -> String;
}

impl Tamper for EmbeddedStore {
    fn rewrite_sql(event_id: Uuid, data: &Value, listed: &[&str]) -> String {
        let data = data.to_string().replace('\'', "''");
        let listed = json!(listed).to_string();
        format!("UPDATE events SET event_data = '{data}', encrypted_fields = '{listed}' WHERE event_id = '{event_id}'")
    }
}

impl Tamper for PgStore {
    fn rewrite_sql(event_id: Uuid, data: &Value, listed: &[&str]) -> String {
        let data = data.to_string().replace('\'', "''");
        let listed: Vec<String> = listed.iter().map(|p| format!("'{p}'")).collect();
        format!(
            "UPDATE events SET event_data = '{data}'::jsonb, encrypted_fields = ARRAY[{}]::text[] \
             WHERE event_id = '{event_id}'",
            listed.join(", ")
        )
    }
}

/// Everything these checks need of a store.
pub trait TamperStore: FailureStore + Tamper {}
impl<T: FailureStore + Tamper> TamperStore for T {}

async fn rewrite<S: TamperStore>(store: &S, id: Uuid, change: impl FnOnce(&mut Value) -> Vec<&'static str>) {
    let event = store.read_aggregate(id, ReadBound::All).await.expect("read").remove(0);
    let mut data: Value = serde_json::from_str(event.event_data.get()).expect("json");
    let listed = change(&mut data);
    store.run_sql(&S::rewrite_sql(event.event_id, &data, &listed)).await;
}

fn registered(n: u128) -> Value {
    json!({"email": format!("{n}-{ADA_EMAIL}"), "name": format!("Person {n}"), "plan": "pro"})
}

/// A tampered ciphertext, an unlisted envelope and a listed plaintext field are each
/// dead-lettered (its aggregate parked, a later event of it held back); the healthy
/// aggregate is applied; no letter or status text holds personal data.
pub async fn unreadable_fields_are_dead_lettered_and_park_only_their_aggregate<S: TamperStore>(store: &S) {
    let keyring = Keyring::generate().expect("keyring");
    let config: EncryptionConfig = config();
    let sealer = Sealer::new(&keyring, &config, "writer");
    for n in 1..=4 {
        seal(store, &sealer, user(n), "UserRegistered", registered(n), ExpectedVersion::Exact(0)).await.expect("seal");
    }
    rewrite(store, user(1), |data| {
        let envelope = data["email"].as_str().expect("sealed").to_owned();
        // One character of the ciphertext changed: still an envelope, no longer genuine.
        let at = envelope.len() - 5;
        let flipped = if &envelope[at..=at] == "A" { "B" } else { "A" };
        data["email"] = json!(format!("{}{flipped}{}", &envelope[..at], &envelope[at + 1..]));
        vec!["email", "name"]
    })
    .await;
    rewrite(store, user(2), |_| vec!["email"]).await;
    rewrite(store, user(3), |data| {
        data["email"] = json!(format!("3-{ADA_EMAIL}"));
        vec!["email", "name"]
    })
    .await;
    let held = seal(store, &sealer, user(1), "UserRenamed", json!({"name": "Later"}), ExpectedVersion::Any)
        .await
        .expect("a later event of the tampered aggregate");
    settle(store, &held).await;

    register(store).await;
    assert_eq!(run_live(store, granted(&keyring, &["email", "name"])).await, 3);
    let rows = profiles(store).await;
    assert_eq!(rows.keys().copied().collect::<Vec<_>>(), [user(4)], "only the healthy aggregate applied: {rows:?}");
    assert_eq!(rows[&user(4)].0.email.as_deref(), Some(format!("4-{ADA_EMAIL}").as_str()));

    let letters = store.list(&DeadLetterFilter::default()).await.expect("letters");
    let error_of =
        |id: Uuid| letters.iter().find(|l| l.aggregate_id == id).map(|l| l.error.clone()).unwrap_or_default();
    assert!(error_of(user(1)).contains("failed authentication"), "{}", error_of(user(1)));
    assert!(error_of(user(2)).contains("holds an envelope but is not listed as encrypted"), "{}", error_of(user(2)));
    assert!(
        error_of(user(3)).contains("is listed as encrypted but does not hold an envelope"),
        "{}",
        error_of(user(3))
    );
    let exclusions = store.exclusions(UserProfile.name()).await.expect("exclusions");
    for n in 1..=3 {
        assert!(exclusions.parked.by_aggregate.contains_key(&user(n)), "aggregate {n} is parked: {exclusions:?}");
    }
    let texts = format!("{letters:?} {:?}", store.states().await.expect("states"));
    for n in 1..=4 {
        for pii in [format!("{n}-{ADA_EMAIL}"), format!("Person {n}")] {
            assert!(!texts.contains(&pii), "{pii} in {texts}");
        }
    }
    let audit = store.audit_log(None, 100).await.expect("audit");
    assert!(
        audit.iter().any(|a| a.record.error_class.as_deref() == Some("permanent") && a.record.actor == "user-profile"),
        "a failed decrypt is audited: {audit:?}"
    );
    assert!(!format!("{audit:?}").contains(ADA_EMAIL), "audit rows hold no personal data");
}

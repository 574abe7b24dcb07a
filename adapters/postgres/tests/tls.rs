//! TLS against the test server (SSL on, a self-signed certificate for `localhost`): each
//! `sslmode` gets the encryption and the certificate checks it asks for, and a connection
//! that fails says why without showing the password.

use std::sync::atomic::{AtomicU32, Ordering};

use projector::StoreError;
use projector_postgres::PgStore;
use projector_tests::pg::TestDb;

const PASSWORD: &str = "s3cr3t-pw-42";

/// A CA certificate that signed nothing (its key is gone).
const UNRELATED_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBtjCCAV2gAwIBAgIUPC5CLaqpSVjjwq/4bbx1NDvmpkAwCgYIKoZIzj0EAwIw
MDEuMCwGA1UEAwwlUHJvamVjdG9yIHRlc3QgQ0EgdGhhdCBzaWduZWQgbm90aGlu
ZzAgFw0yNjEyMDMxMDEzMDJaGA8yMTI2MTEwOTEwMTMwMlowMDEuMCwGA1UEAwwl
UHJvamVjdG9yIHRlc3QgQ0EgdGhhdCBzaWduZWQgbm90aGluZzBZMBMGByqGSM49
AgEGCCqGSM49AwEHA0IABKq8ffzWipWaAek8joIOrsEsMsNTbQ0jCpnu0xrph3ij
N7KIQTCgT7A7ZSaInZYF9ThQUI4yFAf9Gm5QtiW4ENSjUzBRMB0GA1UdDgQWBBSV
Q2Yo1hu4PbFKg/JTqRub5lyZAjAfBgNVHSMEGDAWgBSVQ2Yo1hu4PbFKg/JTqRub
5lyZAjAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0cAMEQCIC3bhjpLVGlM
n4qw1JP35MMUxop+j7oJcna3BM8G1UXsAiBykysx80v0kqqaDXLbZdd2j4xOtXhG
tlA3jhJl7jlhNQ==
-----END CERTIFICATE-----
";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// `url` with `params` added to its query string.
fn with(url: &str, params: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{params}")
}

/// A name for one connection, to find it in `pg_stat_activity`.
fn application_name(what: &str) -> String {
    format!("tls-{what}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Whether the connection named `name` is encrypted, as the server sees it.
async fn uses_ssl(db: &TestDb, name: &str) -> bool {
    let client = db.client().await;
    let row = client
        .query_one(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = $1",
            &[&name],
        )
        .await
        .unwrap_or_else(|e| panic!("no connection named {name} on the server: {e}"));
    row.get(0)
}

/// The certificate file the server presents (self-signed here).
async fn server_certificate(db: &TestDb) -> String {
    let client = db.client().await;
    client.query_one("SHOW ssl_cert_file", &[]).await.expect("SHOW ssl_cert_file").get(0)
}

/// Connects with `params` added, runs a statement, and says whether the connection was
/// encrypted.
async fn connect_and_check(db: &TestDb, url: &str, params: &str) -> bool {
    let name = application_name("mode");
    let store = PgStore::connect(&with(url, &format!("{params}&application_name={name}")))
        .await
        .unwrap_or_else(|e| panic!("connect with {params}: {e}"));
    store.execute_script("SELECT 1").await.expect("a statement over the connection");
    uses_ssl(db, &name).await
}

fn write_temp(name: &str, contents: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!(
        "projector-{}-{}-{name}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, contents).expect("write temp file");
    path
}

#[tokio::test]
async fn each_sslmode_gets_the_encryption_it_asks_for() {
    let db = TestDb::empty().await;
    assert!(!connect_and_check(&db, &db.url, "sslmode=disable").await, "disable: plain");
    assert!(connect_and_check(&db, &db.url, "sslmode=prefer").await, "prefer: TLS, the server offers it");
    assert!(connect_and_check(&db, &db.url, "application_name=x").await, "no sslmode is prefer");
    assert!(connect_and_check(&db, &db.url, "sslmode=require").await, "require: TLS");
}

#[tokio::test]
async fn verify_full_accepts_the_server_certificate_for_the_name_it_carries_and_only_that() {
    let db = TestDb::empty().await;
    let cert = server_certificate(&db).await;
    let by_name = db.url.replace("127.0.0.1", "localhost");
    assert!(
        connect_and_check(&db, &by_name, &format!("sslmode=verify-full&sslrootcert={cert}")).await,
        "verify-full to localhost, whose name the certificate carries"
    );
    // Keyword form too.
    let name = application_name("keywords");
    let dbname = db.url.rsplit('/').next().unwrap().split('?').next().unwrap();
    let keywords = format!(
        "host=localhost port=5432 user=postgres dbname={dbname} sslmode=verify-full sslrootcert='{cert}' application_name={name}"
    );
    let store = PgStore::connect(&keywords).await.unwrap_or_else(|e| panic!("{keywords}: {e}"));
    store.execute_script("SELECT 1").await.expect("statement");
    assert!(uses_ssl(&db, &name).await);

    let err = PgStore::connect(&with(&db.url, &format!("sslmode=verify-full&sslrootcert={cert}")))
        .await
        .expect_err("127.0.0.1 is not a name the certificate carries");
    let message = err.to_string();
    assert!(matches!(err, StoreError::Database(_)), "{err:?}");
    assert!(
        message.contains("certificate verification failed") && message.contains("does not name the host"),
        "{message}"
    );
    assert!(
        connect_and_check(&db, &db.url, &format!("sslmode=verify-ca&sslrootcert={cert}")).await,
        "verify-ca checks the chain, not the name"
    );
}

#[tokio::test]
async fn verify_full_with_a_ca_that_did_not_sign_the_certificate_fails_naming_verification() {
    let db = TestDb::empty().await;
    let ca = write_temp("unrelated-ca.pem", UNRELATED_CA);
    let by_name = db.url.replace("127.0.0.1", "localhost");
    for (mode, params) in [
        ("verify-full", format!("sslmode=verify-full&sslrootcert={}", ca.display())),
        ("verify-ca", format!("sslmode=verify-ca&sslrootcert={}", ca.display())),
        // libpq's rule: `require` with a root certificate file checks the chain.
        ("require", format!("sslmode=require&sslrootcert={}", ca.display())),
    ] {
        let err = PgStore::connect(&with(&by_name, &params)).await.expect_err("an unrelated CA");
        let message = err.to_string();
        assert!(matches!(err, StoreError::Database(_)), "{mode}: {err:?}");
        assert!(message.contains("certificate verification failed"), "{mode}: {message}");
        assert!(message.contains("not signed by a trusted CA"), "{mode}: {message}");
        assert!(message.contains(&ca.display().to_string()), "{mode}: names the CA file: {message}");
    }
    // Without sslrootcert, the public roots: a self-signed certificate is not among them.
    let err = PgStore::connect(&with(&by_name, "sslmode=verify-full")).await.expect_err("self-signed");
    let message = err.to_string();
    assert!(message.contains("certificate verification failed") && message.contains("Mozilla"), "{message}");
    let _ = std::fs::remove_file(ca);
}

#[tokio::test]
async fn an_unusable_root_certificate_file_is_invalid_input_naming_it() {
    let missing = format!("postgres://u:{PASSWORD}@localhost/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem");
    let err = PgStore::connect(&missing).await.expect_err("no such file");
    let message = err.to_string();
    assert!(matches!(err, StoreError::InvalidInput(_)), "{err:?}");
    assert!(message.contains("/nonexistent/ca.pem") && !message.contains(PASSWORD), "{message}");

    let empty = write_temp("not-a-ca.pem", "not a certificate\n");
    let err = PgStore::connect(&format!("postgres://localhost/db?sslmode=verify-ca&sslrootcert={}", empty.display()))
        .await
        .expect_err("no certificate in it");
    assert!(err.to_string().contains("holds no PEM certificate"), "{err}");
    let _ = std::fs::remove_file(empty);
}

#[tokio::test]
async fn connection_failures_name_their_cause_and_never_the_password() {
    let db = TestDb::empty().await;
    let base = db.url.split('?').next().unwrap();
    let (server, _) = base.rsplit_once('/').unwrap();
    let server = server.replacen("postgres://postgres@", &format!("postgres://postgres:{PASSWORD}@"), 1);
    let no_database = format!("{server}/projector_no_such_database");
    let cases: Vec<(String, &str, bool)> = vec![
        (no_database.clone(), "database \"projector_no_such_database\" does not exist", false),
        (format!("{no_database}?sslmode=require&password={PASSWORD}"), "SQLSTATE 3D000", false),
        (
            server.replacen("//postgres:", "//projector_no_such_role:", 1) + "/postgres",
            "role \"projector_no_such_role\" does not exist",
            false,
        ),
        (format!("postgres://postgres:{PASSWORD}@127.0.0.1:1/db"), "connection refused", true),
        (format!("host=127.0.0.1 port=1 user=postgres password='{PASSWORD}' dbname=db"), "connection refused", true),
        (
            format!("host=127.0.0.1 user=postgres password={PASSWORD} dbname=projector_no_such_database"),
            "does not exist",
            false,
        ),
    ];
    for (url, cause, transient) in cases {
        let err = PgStore::connect(&url).await.expect_err(&url);
        let message = err.to_string();
        assert!(!message.contains(PASSWORD), "the password shows in: {message}");
        assert!(message.contains(cause), "{message}\nshould say {cause:?}");
        assert!(message.contains("127.0.0.1"), "names the host: {message}");
        assert_eq!(err.is_retryable(), transient, "{message}");
    }
    for url in [format!("mysql://root:{PASSWORD}@127.0.0.1/db"), format!("http://u:{PASSWORD}@127.0.0.1/db")] {
        let err = PgStore::connect(&url).await.expect_err("not PostgreSQL");
        let message = err.to_string();
        assert!(matches!(err, StoreError::InvalidInput(_)), "{err:?}");
        assert!(message.contains("is not PostgreSQL's") && !message.contains(PASSWORD), "{message}");
    }
}

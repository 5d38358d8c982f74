//! Transport security against the machine's TLS listeners (made by
//! scripts/lib.sh: a local CA whose localhost certificate RabbitMQ serves on
//! 5671, amqps only, and PostgreSQL with `ssl = on`).

use std::time::Duration;

use saga_tests::{Options, Platform, Svc, eventually};

const CA: &str = "/etc/saga-platform/tls/ca.pem";
/// The system's roots: they do not sign the local certificate.
const OTHER_CA: &str = "/etc/ssl/certs/ca-certificates.crt";
const AMQPS_URL: &str = "amqps://guest:guest@localhost:5671/%2f";

fn tls_env(ca: &str) -> Vec<(&'static str, String)> {
    assert!(std::path::Path::new(CA).exists(), "{CA} missing: run `source scripts/lib.sh; ensure_rabbitmq`");
    vec![
        ("AMQP_URL", AMQPS_URL.into()),
        ("AMQP_TLS_CA_FILE", ca.into()),
        ("PGSSLMODE", "verify-full".into()),
        ("PGSSLROOTCERT", ca.into()),
    ]
}

#[tokio::test]
async fn an_order_completes_over_amqps_and_verified_postgres_tls() {
    // Port 5671 speaks TLS only, and verify-full checks the database's
    // certificate against the CA: a completed saga used both.
    let platform = Platform::start(Options { env: tls_env(CA), ..Options::default() }).await;
    platform.put_product("TLS-1", 250, 10).await;
    platform.put_account("tls-customer", 10_000).await;
    let id = platform.place_order("tls-customer", &[("TLS-1", 2)]).await;
    let order = platform.wait_final(&id, Duration::from_secs(30)).await;
    assert_eq!(order["status"], "COMPLETED", "{order}");
    platform.shutdown().await;
}

/// Waits until the replica's log says `needle`, then checks that it never
/// became ready (a refused certificate must not fall back to plain text).
async fn refused(platform: &mut Platform, svc: Svc, needle: &str) {
    let log = eventually(&format!("{} logs {needle:?}", svc.binary()), Duration::from_secs(20), || async {
        let log = platform.log(svc, 0);
        log.contains(needle).then_some(log)
    })
    .await;
    let ready = platform.http.get(platform.url(svc, "/readyz")).send().await.map(|r| r.status().as_u16());
    assert!(!matches!(ready, Ok(200)), "{} became ready with a refused certificate: {log}", svc.binary());
}

#[tokio::test]
async fn a_broker_certificate_from_another_ca_is_refused() {
    let mut platform = Platform::start(Options::default()).await;
    let env = [("AMQP_URL", AMQPS_URL.to_owned()), ("AMQP_TLS_CA_FILE", OTHER_CA.to_owned())];
    platform.restart_with(Svc::Payment, 0, &env);
    refused(&mut platform, Svc::Payment, "UnknownIssuer").await;
    platform.shutdown().await;
}

#[tokio::test]
async fn a_database_certificate_from_another_ca_is_refused() {
    let mut platform = Platform::start(Options::default()).await;
    let env = [("PGSSLMODE", "verify-full".to_owned()), ("PGSSLROOTCERT", OTHER_CA.to_owned())];
    platform.restart_with(Svc::Inventory, 0, &env);
    refused(&mut platform, Svc::Inventory, "UnknownIssuer").await;
    platform.shutdown().await;
}

#[tokio::test]
async fn a_broker_ca_for_a_plain_url_stops_the_service() {
    // A CA given for amqp:// would silently not be used: refused at start.
    let mut platform = Platform::start(Options::default()).await;
    platform.restart_with(Svc::Order, 0, &[("AMQP_TLS_CA_FILE", CA.to_owned())]);
    let status = eventually("order-service exits", Duration::from_secs(10), || {
        std::future::ready(platform.exit_status(Svc::Order, 0))
    })
    .await;
    assert_eq!(status.code(), Some(2));
    assert!(platform.log(Svc::Order, 0).contains("AMQP_TLS_CA_FILE is set but AMQP_URL does not use amqps://"));
    platform.shutdown().await;
}

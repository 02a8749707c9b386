//! The admin HTTP server against a real NATS server and a real Postgres.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::time::Duration;

use flexcore_config::NatsSettings;
use flexcore_service::admin::{self, CheckOutcome, Checks};
use flexcore_testkit::{wait_until, TestDb, TestNats};
use serde_json::{json, Value};
use sqlx::postgres::PgPoolOptions;
use tokio_util::sync::CancellationToken;

const SERVICE: &str = "flexcore-test";
const WAIT: Duration = Duration::from_secs(30);

#[path = "support/scrape.rs"]
mod scrape;

/// `GET path`: the status code and the body parsed as JSON (`Null` if empty or not JSON).
async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, Value)> {
    let (status, _, body) = scrape::get(addr, path).await?;
    Ok((status, serde_json::from_str(&body).unwrap_or(Value::Null)))
}

/// The `checks` entry named `name`.
fn check<'a>(body: &'a Value, name: &str) -> &'a Value {
    body["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no check {name} in {body}"))
}

/// A service-like NATS client: reconnecting forever.
async fn nats_client(nats: &TestNats) -> async_nats::Client {
    let settings = NatsSettings {
        url: nats.url.clone(),
        ..NatsSettings::default()
    };
    let identity = nats.identity(flexcore_testkit::nats::HARNESS).unwrap();
    flexcore_service::connect::nats(SERVICE, &settings, Some(&identity))
        .await
        .unwrap()
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    listener.local_addr().unwrap().port()
}

async fn assert_live(addr: SocketAddr) {
    let (status, body) = get(addr, "/health/live").await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"status": "up", "service": SERVICE}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_follows_the_nats_connection_and_live_stays_up() {
    let mut nats = TestNats::start().await.unwrap();
    let db = TestDb::create_empty().await.unwrap();
    let client = nats_client(&nats).await;
    let shutdown = CancellationToken::new();
    let checks = Checks::new().nats(client).postgres(db.pool.clone());
    let addr = admin::spawn("127.0.0.1:0", SERVICE, checks, shutdown.clone())
        .await
        .unwrap()
        .expect("an address");
    assert_ne!(addr.port(), 0);

    let (status, body) = get(addr, "/health/ready").await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({
            "status": "ready",
            "service": SERVICE,
            "checks": [
                {"name": "nats", "ok": true, "detail": "connected"},
                {"name": "postgres", "ok": true, "detail": "ok"},
            ],
        })
    );
    assert_live(addr).await;

    nats.stop();
    wait_until(WAIT, "ready to turn 503 with NATS down", || async move {
        matches!(get(addr, "/health/ready").await, Ok((503, _)))
    })
    .await
    .unwrap();
    let (status, body) = get(addr, "/health/ready").await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "unready");
    assert_eq!(body["service"], SERVICE);
    assert_eq!(check(&body, "nats")["ok"], false, "{body}");
    assert_ne!(check(&body, "nats")["detail"], "connected", "{body}");
    assert_eq!(check(&body, "postgres")["ok"], true, "{body}");
    assert_live(addr).await;

    nats.restart().await.unwrap();
    wait_until(WAIT, "ready to return to 200 after NATS is back", || async move {
        matches!(get(addr, "/health/ready").await, Ok((200, _)))
    })
    .await
    .unwrap();
    let (_, body) = get(addr, "/health/ready").await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(check(&body, "nats")["detail"], "connected");
    assert_live(addr).await;

    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_503_while_postgres_is_unreachable() {
    let nats = TestNats::start().await.unwrap();
    let client = nats_client(&nats).await;
    let pool = PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(300))
        .connect_lazy(&format!("postgres://postgres@127.0.0.1:{}/nowhere", closed_port()))
        .unwrap();
    let shutdown = CancellationToken::new();
    let checks = Checks::new().nats(client).postgres(pool);
    let addr = admin::spawn("127.0.0.1:0", SERVICE, checks, shutdown.clone())
        .await
        .unwrap()
        .unwrap();

    let (status, body) = get(addr, "/health/ready").await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "unready");
    assert_eq!(
        check(&body, "nats"),
        &json!({"name": "nats", "ok": true, "detail": "connected"})
    );
    let postgres = check(&body, "postgres");
    assert_eq!(postgres["ok"], false, "{body}");
    assert!(!postgres["detail"].as_str().unwrap().is_empty(), "{body}");
    assert_live(addr).await;
    shutdown.cancel();
}

#[tokio::test]
async fn registered_checks_are_reported_in_order_and_bounded_in_time() {
    let shutdown = CancellationToken::new();
    let checks = Checks::new()
        .timeout(Duration::from_millis(200))
        .with_fn("always", || async { CheckOutcome::ok("fine") })
        .with_fn("hangs", std::future::pending::<CheckOutcome>)
        .with_fn("broken", || async { CheckOutcome::failed("it broke") });
    let addr = admin::spawn("127.0.0.1:0", SERVICE, checks, shutdown.clone())
        .await
        .unwrap()
        .unwrap();
    let (status, body) = get(addr, "/health/ready").await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body,
        json!({
            "status": "unready",
            "service": SERVICE,
            "checks": [
                {"name": "always", "ok": true, "detail": "fine"},
                {"name": "hangs", "ok": false, "detail": "timed out after 200ms"},
                {"name": "broken", "ok": false, "detail": "it broke"},
            ],
        })
    );
    let (status, _) = get(addr, "/nowhere").await.unwrap();
    assert_eq!(status, 404);
    shutdown.cancel();
}

#[tokio::test]
async fn without_checks_the_service_is_ready() {
    let shutdown = CancellationToken::new();
    let addr = admin::spawn("127.0.0.1:0", SERVICE, Checks::new(), shutdown.clone())
        .await
        .unwrap()
        .unwrap();
    let (status, body) = get(addr, "/health/ready").await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"status": "ready", "service": SERVICE, "checks": []}));
    shutdown.cancel();
}

#[tokio::test]
async fn an_empty_listen_address_starts_nothing() {
    let shutdown = CancellationToken::new();
    let started = admin::spawn("", SERVICE, Checks::new(), shutdown.clone())
        .await
        .unwrap();
    assert_eq!(started, None);
}

#[tokio::test]
async fn a_taken_address_is_an_error_naming_it() {
    let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let err = admin::spawn(&listen, SERVICE, Checks::new(), CancellationToken::new())
        .await
        .unwrap_err();
    let message = format!("{err:#}");
    assert!(message.contains(&listen), "{message}");
    assert!(message.contains("admin.listen"), "{message}");

    let err = admin::spawn("not-an-address", SERVICE, Checks::new(), CancellationToken::new())
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("not-an-address"), "{err:#}");
}

#[tokio::test]
async fn the_server_stops_on_shutdown() {
    let shutdown = CancellationToken::new();
    let addr = admin::spawn("127.0.0.1:0", SERVICE, Checks::new(), shutdown.clone())
        .await
        .unwrap()
        .unwrap();
    assert_live(addr).await;
    shutdown.cancel();
    wait_until(WAIT, "the admin port to close", || async move {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await
    .unwrap();
}

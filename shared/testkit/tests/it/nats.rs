use std::time::Duration;

use async_nats::jetstream::stream::Config as StreamConfig;
use flexcore_testkit::{init_tracing, wait_until, TestNats};

#[tokio::test]
async fn a_stream_survives_a_restart() {
    init_tracing();
    let mut nats = TestNats::start().await.unwrap();
    assert!(nats.is_running());
    assert_eq!(nats.url, format!("nats://127.0.0.1:{}", nats.port()));

    let js = nats.jetstream().await.unwrap();
    js.create_stream(StreamConfig {
        name: "TESTKIT".to_owned(),
        subjects: vec!["testkit.>".to_owned()],
        ..Default::default()
    })
    .await
    .unwrap();
    js.publish("testkit.one", "persisted".into())
        .await
        .unwrap()
        .await
        .unwrap();

    let port = nats.port();
    nats.stop();
    assert!(!nats.is_running());
    nats.stop(); // Stopping twice is harmless.
    nats.restart().await.unwrap();
    assert!(nats.is_running());
    assert_eq!(nats.port(), port);

    let js = nats.jetstream().await.unwrap();
    let mut stream = js.get_stream("TESTKIT").await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.state.messages, 1);
    let message = stream.get_raw_message(1).await.unwrap();
    assert_eq!(message.payload.as_ref(), b"persisted");
}

#[tokio::test]
async fn a_connected_client_reconnects_after_a_restart() {
    init_tracing();
    let mut nats = TestNats::start().await.unwrap();
    let client = nats.client().await.unwrap();
    nats.restart().await.unwrap();
    wait_until(Duration::from_secs(10), "the client to reconnect", || {
        let client = client.clone();
        async move { client.connection_state() == async_nats::connection::State::Connected }
    })
    .await
    .unwrap();
    client.flush().await.unwrap();
}

#[tokio::test]
async fn servers_are_private_and_accept_large_payloads() {
    let a = TestNats::start().await.unwrap();
    let b = TestNats::start().await.unwrap();
    assert_ne!(a.port(), b.port());
    assert_ne!(a.store_dir(), b.store_dir());

    let client = a.client().await.unwrap();
    assert!(client.server_info().max_payload >= 8 * 1024 * 1024);
    let mut subscription = client.subscribe("big").await.unwrap();
    client.publish("big", vec![7_u8; 2 * 1024 * 1024].into()).await.unwrap();
    let message = tokio::time::timeout(Duration::from_secs(10), futures_next(&mut subscription))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(message.payload.len(), 2 * 1024 * 1024);
}

#[tokio::test]
async fn dropping_stops_the_server() {
    let nats = TestNats::start().await.unwrap();
    let addr = format!("127.0.0.1:{}", nats.port());
    let log = nats.log_path();
    drop(nats);
    assert!(tokio::net::TcpStream::connect(&addr).await.is_err());
    assert!(!log.exists(), "the temporary directory is removed");
}

async fn futures_next(subscription: &mut async_nats::Subscriber) -> Option<async_nats::Message> {
    use futures::StreamExt as _;
    subscription.next().await
}

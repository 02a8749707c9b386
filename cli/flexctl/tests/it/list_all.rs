use std::sync::{Arc, Mutex};

use flexcore_testkit::TestNats;
use futures::StreamExt as _;
use serde_json::{json, Value};

/// A list whose second page starts with an item too large for any reply: the service
/// refuses that page with `payload_too_large` and `details.next_cursor`; `list_all`
/// skips the item and reads on from that cursor instead of failing. A refusal without a
/// cursor still fails the listing.
#[tokio::test]
async fn list_all_skips_an_item_too_large_for_a_reply() {
    flexcore_testkit::init_tracing();
    let nats = TestNats::start().await.unwrap();
    let service = nats.client().await.unwrap();
    // A scripted `pipeline.list`: the cursor asked for decides the reply.
    let mut requests = service.subscribe("flexcore.qry.pipeline.list").await.unwrap();
    let asked: Arc<Mutex<Vec<Value>>> = Arc::default();
    let seen = asked.clone();
    let responder = tokio::spawn(async move {
        while let Some(message) = requests.next().await {
            let body: Value = serde_json::from_slice(&message.payload).unwrap();
            seen.lock().unwrap().push(body["cursor"].clone());
            let reply = match body["cursor"].as_str() {
                None => json!({"ok": true, "data": [{"pipeline_id": "a"}], "next_cursor": "c1", "position": 7}),
                Some("c1") => json!({"ok": false, "error": {
                    "code": "payload_too_large",
                    "message": "the first item of the page is 70000 bytes, more than fits in one reply",
                    "details": {"reason": "too_large", "size": 70000, "limit": 61440,
                                "next_cursor": "c2", "id": "big"}}}),
                Some("c2") => json!({"ok": true, "data": [{"pipeline_id": "c"}], "position": 7}),
                Some(_) => json!({"ok": false, "error": {
                    "code": "payload_too_large", "message": "too large",
                    "details": {"reason": "too_large", "size": 70000, "limit": 61440}}}),
            };
            let reply_to = message.reply.unwrap();
            service
                .publish(reply_to, serde_json::to_vec(&reply).unwrap().into())
                .await
                .unwrap();
        }
    });
    let api = flexctl::api::Api::new(flexcore_client::Client::new(nats.client().await.unwrap()));
    let items: Vec<Value> = api.list_all("pipeline.list", &json!({}), 100).await.unwrap();
    assert_eq!(items, vec![json!({"pipeline_id": "a"}), json!({"pipeline_id": "c"})]);
    assert_eq!(*asked.lock().unwrap(), vec![Value::Null, json!("c1"), json!("c2")]);

    // Without a cursor to go on from, the refusal is the answer.
    let error = api
        .list_all::<Value>("pipeline.list", &json!({"cursor": "other"}), 100)
        .await
        .unwrap_err();
    assert_eq!(error.refusal().unwrap().code.as_str(), "payload_too_large", "{error}");
    responder.abort();
}

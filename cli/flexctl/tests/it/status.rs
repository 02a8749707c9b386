//! `flexctl status` against a real NATS server: each probe says what it checked in an
//! operator's terms, never the request it sends (`plugin.enable`, `projection.list`).

use flexcore_testkit::TestNats;
use flexctl::status;

use crate::{operator_api, spawn_service};

#[tokio::test]
async fn status_describes_its_probes_in_operator_terms() {
    // Nothing but NATS: both probes fail, each saying what it checked and what that means.
    let nats = TestNats::start().await.unwrap();
    let down = status::gather(&operator_api(nats.client().await.unwrap()))
        .await
        .unwrap();
    assert!(!down.command.up && !down.projection.up, "{down:?}");
    let text = down.text();
    assert!(
        text.contains(
            "DOWN: nothing answers a test command (refused by validation, changes nothing): \
             no flexcore-command replica is connected to this NATS server (is it running?)"
        ),
        "{text}"
    );
    assert!(
        text.contains("DOWN: nothing answers a read of the projections' positions: no flexcore-projection replica"),
        "{text}"
    );
    let json = serde_json::to_string(&down).unwrap();
    for request in ["plugin.enable", "projection.list"] {
        assert!(!text.contains(request) && !json.contains(request), "{text}\n{json}");
    }

    // A command service answers the test command (refusing it changes nothing).
    let service = spawn_service().await;
    let up = status::gather(&operator_api(service.nats.client().await.unwrap()))
        .await
        .unwrap();
    assert!(up.command.up, "{up:?}");
    assert_eq!(
        up.command.check,
        "a test command (refused by validation, changes nothing)"
    );
    assert!(
        up.text()
            .contains("ms to answer a test command (refused by validation, changes nothing)"),
        "{}",
        up.text()
    );
    assert!(!up.text().contains("plugin.enable"), "{}", up.text());
    service.shutdown.cancel();
}

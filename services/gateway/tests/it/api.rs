//! The resources end to end: create, read your write, execute with an idempotency key,
//! follow the run live until it ends, page lists, the generic endpoints, the event stream.

use std::time::Duration;

use flexcore_security::ApiRole;
use flexcore_system_tests::Options;
use futures::StreamExt as _;
use serde_json::{json, Value};

use crate::{problem, Gw};

/// Reads Server-Sent Events from `response` until it ends (or `within` passes): each as
/// (id, event, data).
async fn sse_events(
    response: reqwest::Response,
    within: Duration,
    stop_after: Option<usize>,
) -> (Vec<(String, String, Value)>, bool) {
    let mut events = Vec::new();
    let mut buffer = String::new();
    let mut body = response.bytes_stream();
    let deadline = tokio::time::sleep(within);
    tokio::pin!(deadline);
    loop {
        let chunk = tokio::select! {
            () = &mut deadline => return (events, false),
            c = body.next() => c,
        };
        let Some(chunk) = chunk else {
            return (events, true);
        };
        buffer.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let (mut id, mut event, mut data) = (String::new(), String::new(), String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ").or_else(|| line.strip_prefix("id:")) {
                    id = v.to_owned();
                } else if let Some(v) = line.strip_prefix("event: ").or_else(|| line.strip_prefix("event:")) {
                    event = v.to_owned();
                } else if let Some(v) = line.strip_prefix("data: ").or_else(|| line.strip_prefix("data:")) {
                    data.push_str(v);
                }
            }
            if !event.is_empty() {
                events.push((id, event, serde_json::from_str(&data).unwrap()));
                if stop_after.is_some_and(|n| events.len() >= n) {
                    return (events, false);
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_is_created_read_back_executed_once_and_followed_until_its_run_ends() {
    let gw = Gw::start(Options {
        runner: true,
        ..Options::default()
    })
    .await;
    let pipeline = gw.pipeline("http-etl").await;

    // Read your own write: the position the create returned, as Consistency-Position.
    let created = gw
        .post(
            ApiRole::Admin,
            "/pipelines",
            json!({"name": "second", "owner": "o", "steps": [{"plugin": "http-etl-gen@1.0.0"}, {"plugin": "http-etl-discard@1.0.0"}]}),
        )
        .await;
    assert_eq!(created.status(), 201);
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    let position = created.headers()["consistency-position"].to_str().unwrap().to_owned();
    let body: Value = created.json().await.unwrap();
    assert_eq!(
        location,
        format!("/api/v1/flexcore/pipelines/{}", body["aggregate_id"].as_str().unwrap())
    );
    let read = gw
        .http
        .get(format!("{}{location}", gw.base))
        .bearer_auth(gw.key(ApiRole::Viewer))
        .header("Consistency-Position", &position)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    assert_eq!(read.headers()["etag"], "\"1\"");
    let view: Value = read.json().await.unwrap();
    assert_eq!(view["name"], "second");

    // Execute with an idempotency key: the retry is the same run, answered the same way.
    let execute = || async {
        gw.as_role(
            ApiRole::Operator,
            reqwest::Method::POST,
            &format!("/pipelines/{pipeline}/execute"),
        )
        .header("Idempotency-Key", "nightly-2026-12-05")
        .send()
        .await
        .unwrap()
    };
    let first = execute().await;
    assert_eq!(first.status(), 202);
    let run_location = first.headers()["location"].to_str().unwrap().to_owned();
    let first: Value = first.json().await.unwrap();
    let again = execute().await;
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()["location"].to_str().unwrap(), run_location);
    let again: Value = again.json().await.unwrap();
    assert_eq!(first, again, "a retried request is answered with the first reply");
    let run_id = first["aggregate_id"].as_str().unwrap().to_owned();
    assert!(run_location.ends_with(&run_id));
    // A new run has no version to match.
    let refused = gw
        .as_role(
            ApiRole::Operator,
            reqwest::Method::POST,
            &format!("/pipelines/{pipeline}/execute"),
        )
        .header("If-Match", "\"3\"")
        .send()
        .await
        .unwrap();
    let (status, body) = problem(refused).await;
    assert_eq!(
        (status, body["errors"][0]["field"].as_str()),
        (400, Some("header:If-Match")),
        "{body}"
    );

    // The run live, until it ends: the stream closes after run.succeeded. The execute's
    // position makes the run found even before the run view has it.
    let stream = gw
        .as_role(ApiRole::Viewer, reqwest::Method::GET, &format!("/runs/{run_id}/events"))
        .header("Consistency-Position", first["global_position"].to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let (events, ended) = sse_events(stream, Duration::from_secs(60), None).await;
    assert!(ended, "the stream ends with the run: {events:?}");
    let types: Vec<&str> = events.iter().map(|(_, t, _)| t.as_str()).collect();
    assert_eq!(types.first(), Some(&"run.requested"), "{types:?}");
    assert_eq!(types.last(), Some(&"run.succeeded"), "{types:?}");
    let ids: Vec<u64> = events.iter().map(|(id, _, _)| id.parse().unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids are increasing global positions: {ids:?}"
    );
    // An EventSource reconnecting: after an earlier event it gets the rest; after the
    // last one, 204 (nothing more will come, so it stops).
    let resume = |last: u64| {
        gw.as_role(ApiRole::Viewer, reqwest::Method::GET, &format!("/runs/{run_id}/events"))
            .header("Last-Event-ID", last.to_string())
            .send()
    };
    let (rest, ended) = sse_events(resume(ids[0]).await.unwrap(), Duration::from_secs(30), None).await;
    assert!(ended);
    let rest: Vec<u64> = rest.iter().map(|(id, _, _)| id.parse().unwrap()).collect();
    assert_eq!(rest, ids[1..], "the events after Last-Event-ID");
    assert_eq!(resume(*ids.last().unwrap()).await.unwrap().status(), 204);

    // The caller is the actor, whatever header it sent.
    let (status, page) = gw
        .get(ApiRole::Viewer, &format!("/events?aggregate_id={run_id}&order=asc"))
        .await;
    assert_eq!(status, 200, "{page}");
    let requested = &page["items"][0];
    assert_eq!(requested["metadata"]["actor"], "key:ops", "{requested}");

    // Its log lines (the generator writes none to stderr: an empty list, not an error).
    let (status, logs) = gw.get(ApiRole::Viewer, &format!("/runs/{run_id}/logs")).await;
    assert_eq!(status, 200, "{logs}");
    assert!(logs["lines"].is_array());

    // Its log lines as a stream: the stored ones, then the end (the run has ended).
    let logs = gw
        .as_role(
            ApiRole::Viewer,
            reqwest::Method::GET,
            &format!("/runs/{run_id}/logs/stream"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(logs.status(), 200);
    assert_eq!(logs.headers()["content-type"], "text/event-stream");
    tokio::time::timeout(Duration::from_secs(15), logs.bytes())
        .await
        .expect("the log stream of an ended run ends")
        .unwrap();
    let unknown = gw
        .as_role(
            ApiRole::Viewer,
            reqwest::Method::GET,
            &format!("/runs/{}/logs/stream", uuid::Uuid::new_v4()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);

    // Counted by route template and status, with the gateway's own time.
    let metrics = flexcore_service::metrics::render().unwrap();
    for line in [
        r#"flexcore_http_requests_total{route="/api/v1/flexcore/pipelines/{id}/{action}",status="202"}"#,
        r#"flexcore_http_request_duration_seconds_count{route="/api/v1/flexcore/runs/{id}/logs"}"#,
        "flexcore_http_gateway_own_seconds_count",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
}

#[tokio::test]
async fn lists_page_with_link_headers_and_items_carry_etags_for_if_match() {
    let gw = Gw::start(Options::default()).await;
    gw.stack
        .register("flexcore-plugin-generator", "pg-gen", "extractor", json!({}))
        .await;
    gw.stack
        .register("flexcore-plugin-discard", "pg-discard", "loader", json!({}))
        .await;
    let mut last = String::new();
    let mut ids = Vec::new();
    for n in 0..3 {
        let created = gw
            .post(
                ApiRole::Admin,
                "/pipelines",
                json!({"name": format!("page-{n}"), "owner": "o", "steps": [{"plugin": "pg-gen@1.0.0"}, {"plugin": "pg-discard@1.0.0"}]}),
            )
            .await;
        last = created.headers()["consistency-position"].to_str().unwrap().to_owned();
        ids.push(
            created.json::<Value>().await.unwrap()["aggregate_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let first = gw
        .as_role(
            ApiRole::Viewer,
            reqwest::Method::GET,
            "/pipelines?limit=2&sort_by=name&order=asc",
        )
        .header("Consistency-Position", &last)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let link = first.headers()["link"].to_str().unwrap().to_owned();
    let page: Value = first.json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    assert_eq!(page["items"][0]["name"], "page-0");
    let next = link
        .strip_prefix('<')
        .and_then(|l| l.split_once(">; rel=\"next\""))
        .unwrap()
        .0
        .to_owned();
    assert!(
        next.starts_with("/api/v1/flexcore/pipelines?") && next.contains("cursor="),
        "{link}"
    );
    let second: Value = gw
        .http
        .get(format!("{}{next}", gw.base))
        .bearer_auth(gw.key(ApiRole::Viewer))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(second["items"].as_array().unwrap().len(), 1, "{second}");
    assert_eq!(second["items"][0]["name"], "page-2");
    assert!(second["next_cursor"].is_null());

    // If-Match: the version read is the version decided on; a stale one is 412.
    let pause = |etag: &'static str| {
        let gw = &gw;
        let id = ids[0].clone();
        async move {
            gw.as_role(
                ApiRole::Operator,
                reqwest::Method::POST,
                &format!("/pipelines/{id}/pause"),
            )
            .header("If-Match", etag)
            .send()
            .await
            .unwrap()
        }
    };
    let (status, body) = problem(pause("\"7\"").await).await;
    assert_eq!((status, body["reason"].as_str()), (412, Some("version")), "{body}");
    let paused = pause("\"1\"").await;
    assert_eq!(paused.status(), 200);
    assert_eq!(paused.headers()["etag"], "\"2\"");
}

#[tokio::test]
async fn the_generic_endpoints_map_onto_the_contract_and_the_event_stream_resumes() {
    let gw = Gw::start(Options::default()).await;
    let stream = gw
        .as_role(
            ApiRole::Viewer,
            reqwest::Method::GET,
            "/events/stream?aggregate_type=plugin",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let reader = tokio::spawn(sse_events(stream, Duration::from_secs(30), Some(2)));
    // Give the stream's consumer a moment to exist: it delivers events from now on.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let digest = flexcore_plugin_store::upload(
        &gw.stack.js,
        &flexcore_system_tests::plugins::wasm("flexcore-plugin-discard"),
    )
    .await
    .unwrap();
    let mut positions = Vec::new();
    for name in ["gen-a", "gen-b", "gen-c"] {
        let response = gw
            .post(
                ApiRole::Admin,
                "/commands",
                json!({"command": "plugin.register", "body": {"name": name, "version": "1.0.0", "kind": "loader", "module_digest": digest.to_string()}}),
            )
            .await;
        assert_eq!(response.status(), 200);
        positions.push(
            response.json::<Value>().await.unwrap()["global_position"]
                .as_u64()
                .unwrap(),
        );
    }
    let (events, _) = reader.await.unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0].0, positions[0].to_string());
    assert_eq!(events[0].1, "plugin.registered");

    // Resumed after the first: the second and third, nothing twice.
    let resumed = gw
        .as_role(
            ApiRole::Viewer,
            reqwest::Method::GET,
            "/events/stream?aggregate_type=plugin",
        )
        .header("Last-Event-ID", positions[0].to_string())
        .send()
        .await
        .unwrap();
    let (events, _) = sse_events(resumed, Duration::from_secs(10), Some(2)).await;
    let ids: Vec<String> = events.iter().map(|(id, _, _)| id.clone()).collect();
    assert_eq!(ids, [positions[1].to_string(), positions[2].to_string()]);

    // The generic query: the contract's reply as it is.
    let reply: Value = gw
        .post(
            ApiRole::Viewer,
            "/queries",
            json!({"query": "plugin.list", "body": {"name": "gen-*", "min_position": positions[2]}}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(reply["ok"], true);
    assert_eq!(reply["data"].as_array().unwrap().len(), 3, "{reply}");
    // A viewer's command is refused by the command service for its role: 403.
    let (status, body) = problem(
        gw.post(
            ApiRole::Viewer,
            "/commands",
            json!({"command": "plugin.register", "body": {"name": "x", "version": "1.0.0", "kind": "loader", "module_digest": digest.to_string()}}),
        )
        .await,
    )
    .await;
    assert_eq!((status, body["code"].as_str()), (403, Some("unauthorized")), "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("needs API role admin"),
        "{body}"
    );
    // And projection rebuilds are for admins.
    let (status, _) = problem(
        gw.post(
            ApiRole::Operator,
            "/queries",
            json!({"query": "projection.rebuild", "body": {"name": "runs"}}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 403);

    // The status the operator sees.
    let (status, body) = gw.get(ApiRole::Viewer, "/status").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["command"]["up"], true, "{body}");
    assert_eq!(body["projection"]["up"], true, "{body}");
    assert!(body["stats"].is_object(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_requests_each_past_slot_once_and_says_what_became_of_it() {
    let gw = Gw::start(Options::default()).await;
    let pipeline = gw.pipeline("backfilled").await;
    let created = gw
        .post(
            ApiRole::Admin,
            "/schedules",
            json!({"pipeline_id": pipeline, "cron": "0 * * * *", "timezone": "UTC", "paused": true}),
        )
        .await;
    assert_eq!(created.status(), 201);
    let position = created.headers()["consistency-position"].to_str().unwrap().to_owned();
    let schedule = created.json::<Value>().await.unwrap()["aggregate_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Read the schedule once at the create's position, so the backfill finds it.
    let read = gw
        .as_role(ApiRole::Viewer, reqwest::Method::GET, &format!("/schedules/{schedule}"))
        .header("Consistency-Position", &position)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    let backfill = |overlap: &'static str| {
        gw.as_role(
            ApiRole::Operator,
            reqwest::Method::POST,
            &format!("/schedules/{schedule}/backfill"),
        )
        .json(&json!({"from": "2026-01-01T00:00:00Z", "to": "2026-01-01T02:30:00Z", "overlap": overlap}))
        .send()
    };
    // No runner: the first slot's run stays active, and max_active_runs (1) holds the
    // others back: `wait` leaves them pending…
    let first: Value = backfill("wait").await.unwrap().json().await.unwrap();
    let results: Vec<&str> = first["slots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["result"].as_str().unwrap())
        .collect();
    assert_eq!(results, ["requested", "pending", "pending"], "{first}");
    // …the same request again finds the first run existing; `skip` records the others.
    let second: Value = backfill("skip").await.unwrap().json().await.unwrap();
    let results: Vec<&str> = second["slots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["result"].as_str().unwrap())
        .collect();
    assert_eq!(results, ["existed", "skipped", "skipped"], "{second}");
    assert_eq!(
        first["slots"][0]["run_id"], second["slots"][0]["run_id"],
        "one run per slot"
    );
    // A viewer may not; a range in the future is refused.
    let refused = gw
        .as_role(
            ApiRole::Viewer,
            reqwest::Method::POST,
            &format!("/schedules/{schedule}/backfill"),
        )
        .json(&json!({"from": "2026-01-01T00:00:00Z", "to": "2026-01-01T02:30:00Z"}))
        .send()
        .await
        .unwrap();
    assert_eq!(problem(refused).await.0, 403);
    let future = gw
        .as_role(
            ApiRole::Operator,
            reqwest::Method::POST,
            &format!("/schedules/{schedule}/backfill"),
        )
        .json(&json!({"from": "2026-01-01T00:00:00Z", "to": "2999-01-01T00:00:00Z"}))
        .send()
        .await
        .unwrap();
    let (status, body) = problem(future).await;
    assert_eq!(
        (status, body["errors"][0]["field"].as_str()),
        (400, Some("/to")),
        "{body}"
    );
}

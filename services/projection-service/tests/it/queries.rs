//! Queries: read-your-writes through `min_position`, `stale` after the bound, filters,
//! sorting, cursor pagination, and the views composed at query time.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::stack;

#[tokio::test]
async fn min_position_gives_read_your_writes_and_stale_after_its_bound() {
    let s = stack(true).await;
    s.register_plugins().await;
    for i in 0..20 {
        let (id, position) = s.create_pipeline(&format!("ryw-{i}")).await;
        // Right after the command: with min_position the new pipeline is there.
        let reply = s
            .query("pipeline.get", json!({"id": id, "min_position": position}))
            .await;
        assert_eq!(reply["ok"], json!(true), "{reply}");
        assert_eq!(reply["data"]["name"], json!(format!("ryw-{i}")));
        assert!(reply["position"].as_u64().unwrap() >= position);
    }
    // A position that is in no reply: not found, at once, naming the field (the body is
    // valid: this is no refusal for its form).
    let head = s.event_count().await as u64;
    let reply = s
        .query("pipeline.list", json!({"min_position": head + 1_000_000}))
        .await;
    assert_eq!(reply["ok"], json!(false));
    assert_eq!(reply["error"]["details"]["reason"], json!("not_found"), "{reply}");
    assert_eq!(reply["error"]["details"]["path"], json!("/min_position"), "{reply}");
    // Position 0 is before every event: always reached.
    let reply = s.query("pipeline.list", json!({"min_position": 0})).await;
    assert_eq!(reply["ok"], json!(true), "{reply}");
    s.stop().await;
}

#[tokio::test]
async fn a_view_that_does_not_reach_the_position_in_time_is_stale() {
    // A query-only replica (no worker applies events): the view never moves.
    let mut s = stack(false).await;
    s.settings.projection.workers_enabled = false;
    s.spawn_projection().await;
    s.register_plugins().await;
    let (_, position) = s.create_pipeline("never-seen").await;
    let started = Instant::now();
    let reply = s.query("pipeline.list", json!({"min_position": position})).await;
    assert_eq!(reply["ok"], json!(false));
    assert_eq!(reply["error"]["code"], json!("stale"), "{reply}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(2900) && waited < Duration::from_secs(10),
        "stale after about its 3 s bound, took {waited:?}"
    );
    s.stop().await;
}

async fn all_pages(s: &crate::Stack, query: &str, mut body: Value) -> Vec<Value> {
    let mut items = Vec::new();
    loop {
        let reply = s.query(query, body.clone()).await;
        assert_eq!(reply["ok"], json!(true), "{reply}");
        items.extend(reply["data"].as_array().unwrap().iter().cloned());
        match reply.get("next_cursor").and_then(Value::as_str) {
            Some(cursor) => body["cursor"] = json!(cursor),
            None => return items,
        }
    }
}

#[tokio::test]
async fn lists_filter_sort_and_page_without_gaps_or_repeats() {
    let s = stack(true).await;
    s.register_plugins().await;
    crate::burst(&s, "q", 24, 8).await;
    s.caught_up().await;

    // Every run exactly once across pages of 7, newest first.
    let runs = all_pages(&s, "run.list", json!({"limit": 7})).await;
    assert_eq!(runs.len(), 36, "24 first runs, 12 second ones");
    let ids: BTreeSet<&str> = runs.iter().map(|r| r["run_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 36);
    let times: Vec<&str> = runs.iter().map(|r| r["requested_at"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first");

    // Filters.
    let failed = all_pages(&s, "run.list", json!({"state": "failed", "limit": 5})).await;
    assert_eq!(failed.len(), 8);
    assert!(failed
        .iter()
        .all(|r| r["state"] == json!("failed") && r["error"]["code"] == json!("io")));
    let paused = all_pages(&s, "pipeline.list", json!({"state": "paused"})).await;
    assert_eq!(paused.len(), 12);
    let tagged = all_pages(&s, "pipeline.list", json!({"tag": "t1"})).await;
    assert_eq!(tagged.len(), 6);
    let by_name = all_pages(
        &s,
        "pipeline.list",
        json!({"name": "p-q-1*", "sort_by": "name", "order": "asc", "limit": 2}),
    )
    .await;
    let names: Vec<&str> = by_name.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["p-q-1", "p-q-10", "p-q-11", "p-q-12", "p-q-13", "p-q-14", "p-q-15", "p-q-16", "p-q-17", "p-q-18", "p-q-19"]
    );
    let deprecated = all_pages(&s, "plugin.list", json!({"kind": "transformer", "state": "deprecated"})).await;
    assert_eq!(deprecated.len(), 12);

    // A pipeline shows its last run and, while active with an active schedule, its next fire.
    let active = &all_pages(&s, "pipeline.list", json!({"name": "p-q-2"})).await[0];
    assert_eq!(active["last_run"]["state"], json!("cancelled"));
    assert!(active["next_fire"].is_string(), "{active}");
    assert_eq!(active["bookmark"], json!({"bookmark": 2}));
    let paused = &all_pages(&s, "pipeline.list", json!({"name": "p-q-1"})).await[0];
    assert_eq!(paused["last_run"]["state"], json!("succeeded"));
    assert!(paused.get("next_fire").is_none());
    let run = s.data("run.get", json!({"id": paused["last_run"]["run_id"]})).await;
    assert_eq!(run["attempts"].as_array().unwrap().len(), 2, "{run}");
    assert_eq!(run["records_total"], json!(25));
    assert!(run["duration_ms"].is_u64());
    let schedules = all_pages(&s, "schedule.list", json!({"pipeline_id": active["pipeline_id"]})).await;
    assert_eq!(schedules[0]["slots_skipped"], json!(1));
    assert_eq!(schedules[0]["slots_missed"], json!(2));
    assert!(schedules[0]["next_fire"].is_string());

    // The audit log by aggregate, oldest first, and by type.
    let history = all_pages(
        &s,
        "event.list",
        json!({"aggregate_id": active["pipeline_id"], "order": "asc", "limit": 2}),
    )
    .await;
    let types: Vec<&str> = history.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        ["pipeline.created", "pipeline.state_committed", "pipeline.updated"]
    );
    let created = all_pages(
        &s,
        "event.list",
        json!({"event_type": "schedule.created", "limit": 1000}),
    )
    .await;
    assert_eq!(created.len(), 24);
    s.stop().await;
}

#[tokio::test]
async fn a_kept_list_page_never_hides_an_event_applied_after_it() {
    let s = stack(true).await;
    s.register_plugins().await;
    let (id, _) = s.create_pipeline("kept").await;
    s.caught_up().await;
    let query = json!({"name": "kept"});
    let state = |page: Value| page[0]["state"].as_str().unwrap().to_owned();
    let mut expected = "active";
    for round in 0..6 {
        // The same page twice: the second one may come from the kept page.
        assert_eq!(state(s.data("pipeline.list", query.clone()).await), expected);
        assert_eq!(state(s.data("pipeline.list", query.clone()).await), expected);
        let (command, next) = if round % 2 == 0 {
            ("pipeline.pause", "paused")
        } else {
            ("pipeline.resume", "active")
        };
        let reply = s.ok(command, json!({"pipeline_id": id})).await;
        // Read your write, then the same query without min_position: neither is the page
        // kept before the change.
        let mut after = query.clone();
        after["min_position"] = reply["global_position"].clone();
        assert_eq!(state(s.data("pipeline.list", after).await), next, "round {round}");
        assert_eq!(
            state(s.data("pipeline.list", query.clone()).await),
            next,
            "round {round}"
        );
        expected = next;
    }
    // Another page of the same view (another filter) is read on its own.
    assert_eq!(
        s.data("pipeline.list", json!({"name": "nothing-like-it"})).await,
        json!([])
    );
    s.stop().await;
}

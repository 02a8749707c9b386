//! Sizes never stop delivery and never silence a reply: an event the bus could not carry
//! is refused before it is written (so the relay never meets one), and list views page by
//! size (fewer items and a `next_cursor`) with `payload_too_large` only for an item that
//! alone cannot fit in a reply.

use std::collections::HashSet;

use flexcore_system_tests::{Options, Stack};
use serde_json::{json, Value};

/// Registers an extractor `x` and a loader `y` (fake digests: nothing runs them) and
/// creates pipeline `name`; returns its id.
async fn pipeline(s: &Stack, name: &str) -> String {
    for (plugin, kind) in [("x", "extractor"), ("y", "loader")] {
        let digest = format!("sha256:{}", "c".repeat(64));
        let reply = s
            .command(
                "plugin.register",
                json!({"name": plugin, "version": "1.0.0", "kind": kind, "module_digest": digest}),
            )
            .await;
        // The second pipeline finds them registered.
        assert!(
            reply["ok"] == json!(true) || reply["error"]["details"]["reason"] == "unique",
            "{reply}"
        );
    }
    s.ok(
        "pipeline.create",
        json!({"name": name, "owner": "o", "steps": [{"plugin": "x@1.0.0"}, {"plugin": "y@1.0.0"}]}),
    )
    .await["aggregate_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn event_count(s: &Stack) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&s.db.pool)
        .await
        .unwrap()
}

/// The issue's case: a `commit_state` of ~1,048,400 bytes fits under the command limit
/// (1 MiB) but its event would not fit in a NATS message (1 MB). It is refused with the
/// limits in `details`, nothing is written, and a STATE at the stated limit is committed
/// and delivered, as is everything after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_bus_cannot_carry_is_refused_and_delivery_goes_on() {
    let s = Stack::start(Options {
        max_payload: Some("1MB"),
        ..Options::default()
    })
    .await;
    let id = pipeline(&s, "big-state").await;
    let before = event_count(&s).await;
    // Room for the signature's headers (the harness signs as an operator does).
    let filler = 1_048_400 - 100 - 400;
    let body = format!(
        r#"{{"pipeline_id":"{id}","state":{{"blob":"{}"}}}}"#,
        "a".repeat(filler)
    );
    assert!(body.len() < 1_048_576);
    let reply = s.request("flexcore.cmd.pipeline.commit_state", body).await;
    assert_eq!(reply["ok"], json!(false), "{reply}");
    let error = &reply["error"];
    assert_eq!(error["code"], "payload_too_large", "{error}");
    assert_eq!(error["details"]["reason"], "too_large");
    assert_eq!(error["details"]["path"], "/state");
    let limit = error["details"]["limit"].as_u64().unwrap();
    assert!(error["details"]["size"].as_u64().unwrap() > limit, "{error}");
    assert!(limit < 1_048_576, "{error}");
    assert_eq!(event_count(&s).await, before, "a refused command writes nothing");

    // A STATE of exactly the stated limit is committed, published and read back.
    let state = format!(r#"{{"blob":"{}"}}"#, "b".repeat(usize::try_from(limit).unwrap() - 11));
    assert_eq!(state.len() as u64, limit);
    let reply = s
        .request(
            "flexcore.cmd.pipeline.commit_state",
            format!(r#"{{"pipeline_id":"{id}","state":{state}}}"#),
        )
        .await;
    assert_eq!(
        reply["ok"],
        json!(true),
        "{}",
        &reply.to_string()[..300.min(reply.to_string().len())]
    );
    // Delivery goes on behind it: a later command's event reaches the read model.
    let position = s
        .ok(
            "pipeline.pause",
            json!({"pipeline_id": id, "reason": "after the big one"}),
        )
        .await["global_position"]
        .as_u64()
        .unwrap();
    let view = s
        .query("pipeline.get", json!({"id": id, "min_position": position}))
        .await;
    assert_eq!(view["ok"], json!(true), "{}", view["error"]);
    assert_eq!(view["data"]["state"], "paused");
    assert_eq!(view["data"]["bookmark"].to_string().len(), state.len());
    s.stop().await;
}

/// Pages through list `name` with the largest page size; every reply must arrive (a
/// reply over the bus limit would be dropped and the request time out). Returns the items
/// and the number of pages.
async fn all_pages(s: &Stack, name: &str, filter: Value) -> (Vec<Value>, usize) {
    let mut items = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let mut body = filter.clone();
        body["limit"] = json!(1000);
        if let Some(cursor) = &cursor {
            body["cursor"] = json!(cursor);
        }
        let reply = s.query(name, body).await;
        assert_eq!(reply["ok"], json!(true), "{name}: {}", reply["error"]);
        pages += 1;
        items.extend(reply["data"].as_array().unwrap().iter().cloned());
        match reply["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return (items, pages),
        }
        assert!(pages < 1000, "{name}: no end of pages");
    }
}

fn unique_ids(items: &[Value], key: &str) -> usize {
    items
        .iter()
        .map(|item| item[key].as_str().unwrap().to_owned())
        .collect::<HashSet<_>>()
        .len()
}

/// A 512-character cron expression (every listed second, minute, hour, day and month).
fn long_cron() -> String {
    let list = |range: std::ops::RangeInclusive<u32>| range.map(|n| n.to_string()).collect::<Vec<_>>().join(",");
    let rest = format!("{} {} {} {} *", list(0..=59), list(0..=23), list(1..=31), list(1..=12));
    let mut seconds = 59;
    loop {
        let cron = format!("{} {rest}", list(0..=seconds));
        if cron.len() <= 512 {
            return cron;
        }
        seconds -= 1;
    }
}

/// With a 64 KB bus, every list view filled with large items (4,000-character
/// descriptions, 20 KB configs and STATEs, 512-character crons, 30 KB events) answers each page
/// within the limit and hands out every item exactly once over several pages; an item
/// that alone is larger than a reply is refused with `payload_too_large`, not dropped,
/// and on a list page with `details.next_cursor` to page on past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_views_filled_with_large_items_page_by_size() {
    let s = Stack::start(Options {
        max_payload: Some("64KB"),
        ..Options::default()
    })
    .await;
    let description = "d".repeat(4000);
    for n in 0..40 {
        s.ok(
            "plugin.register",
            json!({"name": format!("p{n:02}"), "version": "1.0.0", "kind": if n % 2 == 0 { "extractor" } else { "loader" },
                   "module_digest": format!("sha256:{}", "e".repeat(64)), "description": description}),
        )
        .await;
    }
    let config = json!({"padding": "c".repeat(20_000)});
    let mut pipelines = Vec::new();
    for n in 0..12 {
        let reply = s
            .ok(
                "pipeline.create",
                json!({"name": format!("large-{n:02}"), "owner": "o", "description": description,
                       "max_active_runs": 100,
                       "steps": [{"plugin": "p00@1.0.0", "config": config}, {"plugin": "p01@1.0.0"}]}),
            )
            .await;
        pipelines.push(reply["aggregate_id"].as_str().unwrap().to_owned());
    }
    let cron = long_cron();
    assert!(cron.len() > 500, "{}", cron.len());
    for n in 0..150 {
        s.ok(
            "schedule.create",
            json!({"pipeline_id": pipelines[n % pipelines.len()], "cron": cron, "paused": true}),
        )
        .await;
    }
    // Runs claimed and checkpointed as a runner would, each with a 20 KB STATE.
    let run_state = json!({"blob": "r".repeat(20_000)});
    for n in 0..8 {
        let run = s
            .ok("run.request", json!({"pipeline_id": pipelines[n % pipelines.len()]}))
            .await;
        let run_id = run["aggregate_id"].as_str().unwrap();
        s.ok(
            "run.claim",
            json!({"run_id": run_id, "attempt": 1, "runner_id": "sizes"}),
        )
        .await;
        s.ok(
            "run.checkpoint",
            json!({"run_id": run_id, "attempt": 1, "state": run_state}),
        )
        .await;
    }
    let state = json!({"blob": "s".repeat(30_000)});
    let mut last = 0;
    for id in pipelines.iter().skip(1).take(3) {
        last = s
            .ok("pipeline.commit_state", json!({"pipeline_id": id, "state": state}))
            .await["global_position"]
            .as_u64()
            .unwrap();
    }
    // Every view has processed everything before the pages are read.
    for view in [
        "plugin.list",
        "pipeline.list",
        "schedule.list",
        "run.list",
        "event.list",
    ] {
        let reply = s.query(view, json!({"limit": 1, "min_position": last})).await;
        assert_eq!(reply["ok"], json!(true), "{view}: {}", reply["error"]);
    }

    let (plugins, pages) = all_pages(&s, "plugin.list", json!({})).await;
    assert_eq!((unique_ids(&plugins, "plugin_id"), plugins.len()), (40, 40));
    assert!(pages >= 3, "plugin.list in {pages} pages");
    let (listed, pages) = all_pages(&s, "pipeline.list", json!({})).await;
    assert_eq!((unique_ids(&listed, "pipeline_id"), listed.len()), (12, 12));
    assert!(pages >= 4, "pipeline.list in {pages} pages");
    let (schedules, pages) = all_pages(&s, "schedule.list", json!({})).await;
    assert_eq!((unique_ids(&schedules, "schedule_id"), schedules.len()), (150, 150));
    assert!(pages >= 2, "schedule.list in {pages} pages");
    let (runs, pages) = all_pages(&s, "run.list", json!({})).await;
    assert_eq!((unique_ids(&runs, "run_id"), runs.len()), (8, 8));
    assert!(pages >= 2, "run.list in {pages} pages");
    let (events, pages) = all_pages(&s, "event.list", json!({})).await;
    let stored = event_count(&s).await;
    assert_eq!(
        (unique_ids(&events, "event_id"), events.len()),
        (usize::try_from(stored).unwrap(), usize::try_from(stored).unwrap())
    );
    assert!(pages >= 4, "event.list in {pages} pages");

    // One pipeline whose view (a 20 KB definition and a 45 KB bookmark) is over 64 KB.
    let position = s
        .ok(
            "pipeline.commit_state",
            json!({"pipeline_id": pipelines[0], "state": {"blob": "s".repeat(45_000)}}),
        )
        .await["global_position"]
        .as_u64()
        .unwrap();
    let reply = s
        .query("pipeline.list", json!({"limit": 1, "min_position": position}))
        .await;
    assert_eq!(reply["ok"], json!(true), "{}", reply["error"]);
    let reply = s.query("pipeline.get", json!({"id": pipelines[0]})).await;
    assert_eq!(reply["ok"], json!(false));
    assert_eq!(reply["error"]["code"], "payload_too_large", "{}", reply["error"]);
    assert!(reply["error"]["details"]["size"].as_u64().unwrap() > reply["error"]["details"]["limit"].as_u64().unwrap());
    // The same item first on a list page: refused the same way, not dropped, naming the
    // item and with the cursor that continues after it.
    let reply = s.query("pipeline.list", json!({"name": "large-00"})).await;
    assert_eq!(reply["error"]["code"], "payload_too_large", "{reply}");
    assert_eq!(
        reply["error"]["details"]["id"],
        json!(pipelines[0]),
        "{}",
        reply["error"]
    );
    let cursor = reply["error"]["details"]["next_cursor"]
        .as_str()
        .unwrap_or_else(|| panic!("no details.next_cursor: {}", reply["error"]));
    let after = s
        .query("pipeline.list", json!({"name": "large-00", "cursor": cursor}))
        .await;
    assert_eq!(after["ok"], json!(true), "{}", after["error"]);
    assert_eq!(after["data"], json!([]), "nothing follows the item");
    assert_eq!(after["next_cursor"], Value::Null);
    // Listed by name, it is the first item of all: its cursor pages on through the eleven
    // others, in order, as flexctl's list_all does when it skips it.
    let by_name = json!({"sort_by": "name", "order": "asc"});
    let mut first = by_name.clone();
    first["limit"] = json!(1000);
    let reply = s.query("pipeline.list", first).await;
    assert_eq!(reply["error"]["code"], "payload_too_large", "{reply}");
    assert_eq!(
        reply["error"]["details"]["id"],
        json!(pipelines[0]),
        "{}",
        reply["error"]
    );
    let mut rest = by_name;
    rest["cursor"] = reply["error"]["details"]["next_cursor"].clone();
    assert!(rest["cursor"].is_string(), "{}", reply["error"]);
    let (listed, _) = all_pages(&s, "pipeline.list", rest).await;
    let names: Vec<&str> = listed.iter().map(|p| p["name"].as_str().unwrap()).collect();
    let expected: Vec<String> = (1..12).map(|n| format!("large-{n:02}")).collect();
    assert_eq!(names, expected);
    s.stop().await;
}

//! Cron fires: exactly once across replicas, DST, overlap, catch-up, invalid specs.

use chrono::Duration;
use serde_json::json;

use super::*;

/// Six per-second schedules fire every slot exactly once while three replicas run, the
/// replica owning the first schedule is killed (no goodbye: the others notice its silence)
/// and later restarted; the others take its slots over meanwhile and it takes them back.
#[tokio::test]
async fn three_replicas_fire_every_slot_once_through_a_kill_and_a_restart() {
    let s = stack().await;
    let pipeline = s.pipeline("every-second", json!({"max_active_runs": 1000})).await;
    let mut schedules = Vec::new();
    for _ in 0..6 {
        let spec = json!({"cron": "* * * * * *", "overlap": "allow", "catchup_cap": 10});
        schedules.push(s.schedule(pipeline, spec).await);
    }
    let names = ["a", "b", "c"];
    let owner = names
        .iter()
        .position(|me| {
            let mut view =
                flexcore_scheduler::members::Members::new((*me).to_owned(), std::time::Duration::from_secs(3));
            names.iter().for_each(|n| {
                view.heard(n, true, std::time::Instant::now());
            });
            view.owns(schedules[0])
        })
        .unwrap();
    let start = whole_second(chrono::Utc::now()) + Duration::seconds(1);
    s.clock.set(start);
    let mut replicas: Vec<Option<Replica>> = names.iter().map(|n| Some(s.replica(n))).collect();
    s.settle().await;
    for i in 1..=30 {
        if i == 10 {
            replicas[owner].take().unwrap().kill();
        }
        if i == 20 {
            replicas[owner] = Some(s.replica(names[owner]));
            s.settle().await;
        }
        let slot = start + Duration::seconds(i);
        s.clock.set(slot);
        for schedule in &schedules {
            s.wait_fired(*schedule, slot).await;
        }
    }
    s.settle().await;
    for schedule in &schedules {
        let fired: Vec<_> = s.fired(*schedule).await.into_iter().filter(|t| *t > start).collect();
        let expected: Vec<_> = (1..=30).map(|i| start + Duration::seconds(i)).collect();
        assert_eq!(fired, expected, "every slot once, none twice, none missing");
        assert!(s.schedule_events(*schedule, "schedule.slot_skipped").await.is_empty());
        assert!(s.schedule_events(*schedule, "schedule.slots_missed").await.is_empty());
    }
    // Who fired the first schedule's slots: its owner, others while it was dead, its owner
    // again after the restart.
    let actors: Vec<(String, String)> = sqlx::query_as(
        "SELECT data->>'scheduled_for', metadata->>'actor' FROM events WHERE event_type = 'run.requested' \
         AND data->>'schedule_id' = $1 ORDER BY (data->>'scheduled_for')::timestamptz",
    )
    .bind(schedules[0].to_string())
    .fetch_all(&s.db.pool)
    .await
    .unwrap();
    let by = |i: i64| {
        let slot = start + Duration::seconds(i);
        let (_, actor) = actors.iter().find(|(t, _)| at(t) == slot).unwrap();
        // Each replica signs as its own identity, `scheduler-<name>`.
        actor.strip_prefix("scheduler-").unwrap_or(actor).to_owned()
    };
    let owner = names[owner];
    assert!((1..=9).all(|i| by(i) == owner), "{actors:?}");
    assert!((11..=19).all(|i| by(i) != owner), "{actors:?}");
    assert!((21..=30).all(|i| by(i) == owner), "{actors:?}");
    for r in replicas.into_iter().flatten() {
        r.stop().await;
    }
    s.stop();
}

/// 02:30 Europe/Berlin fires once on every day around both transitions: at 03:00 CEST
/// when 02:30 does not exist, at the first 02:30 when it exists twice.
#[tokio::test]
async fn dst_days_fire_exactly_once() {
    let s = stack().await;
    let pipeline = s.pipeline("nightly", json!({"max_active_runs": 100})).await;
    let spring = s
        .schedule(
            pipeline,
            json!({"cron": "30 2 * * *", "timezone": "Europe/Berlin", "overlap": "allow",
                   "start_at": "2027-03-27T00:00:00Z", "end_at": "2027-03-30T00:00:00Z"}),
        )
        .await;
    let autumn = s
        .schedule(
            pipeline,
            json!({"cron": "30 2 * * *", "timezone": "Europe/Berlin", "overlap": "allow",
                   "start_at": "2027-10-30T00:00:00Z", "end_at": "2027-11-02T00:00:00Z"}),
        )
        .await;
    let replica = s.replica("solo");
    for (schedule, from, expected) in [
        (
            spring,
            "2027-03-27T00:00:00Z",
            ["2027-03-27T01:30:00Z", "2027-03-28T01:00:00Z", "2027-03-29T00:30:00Z"],
        ),
        (
            autumn,
            "2027-10-30T00:00:00Z",
            ["2027-10-30T00:30:00Z", "2027-10-31T00:30:00Z", "2027-11-01T01:30:00Z"],
        ),
    ] {
        // Walk the days in 30-minute steps, so every fire is on time (no catch-up).
        let mut now = at(from);
        let end = now + Duration::days(3);
        let expected: Vec<_> = expected.iter().map(|t| at(t)).collect();
        while now <= end {
            s.clock.set(now);
            for slot in expected.iter().filter(|t| **t <= now) {
                s.wait_fired(schedule, *slot).await;
            }
            now += Duration::minutes(30);
        }
        s.settle().await;
        assert_eq!(s.fired(schedule).await, expected);
        assert!(s.schedule_events(schedule, "schedule.slot_skipped").await.is_empty());
        assert!(s.schedule_events(schedule, "schedule.slots_missed").await.is_empty());
    }
    replica.stop().await;
    s.stop();
}

/// With `overlap: skip`, a slot that finds the previous run still active is skipped, and
/// the skip is an event.
#[tokio::test]
async fn overlap_skip_records_the_skipped_slot() {
    let s = stack().await;
    let pipeline = s.pipeline("slow", json!({})).await;
    let schedule = s.schedule(pipeline, json!({"cron": "* * * * *"})).await;
    let replica = s.replica("solo");
    let next_minute = whole_second(chrono::Utc::now()) + Duration::minutes(1);
    let first = next_minute - Duration::seconds(i64::from(chrono::Timelike::second(&next_minute)));
    s.clock.set(first);
    s.wait_fired(schedule, first).await;
    // The first run is still requested (no runner): the next slot is skipped.
    let second = first + Duration::minutes(1);
    s.clock.set(second);
    let (skip, _) = s.wait_event(schedule, "schedule.slot_skipped").await;
    assert_eq!(skip["reason"], json!("overlap"));
    assert_eq!(at(skip["slot"].as_str().unwrap()), second);
    assert_eq!(s.fired(schedule).await, vec![first]);
    // Once the run is over, the next slot fires again.
    let run = flexcore_contracts::ids::scheduled_run_id(schedule, first);
    s.ok("run.cancel", json!({"run_id": run})).await;
    s.settle().await;
    let third = second + Duration::minutes(1);
    s.clock.set(third);
    s.wait_fired(schedule, third).await;
    replica.stop().await;
    s.stop();
}

/// The scheduler is down for ten slots, catch-up cap 3: on restart the three latest slots
/// fire and the seven older ones are recorded as missed.
#[tokio::test]
async fn catch_up_after_downtime_fires_the_cap_and_records_the_rest_as_missed() {
    let s = stack().await;
    let pipeline = s.pipeline("catchup", json!({"max_active_runs": 100})).await;
    let schedule = s
        .schedule(
            pipeline,
            json!({"cron": "* * * * * *", "overlap": "allow", "catchup_cap": 3, "catchup_window_seconds": 3600}),
        )
        .await;
    let start = whole_second(chrono::Utc::now()) + Duration::seconds(1);
    s.clock.set(start);
    let replica = s.replica("first");
    s.wait_fired(schedule, start).await;
    // The next replica learns what fired from the events stream: once it is there, `start`
    // is not missed. (A replica starting while the relay lags behind the store counts
    // such a slot as missed: docs/operations.md, the scheduler.)
    s.relayed().await;
    replica.stop().await;
    let before = s.fired(schedule).await.len();

    s.clock.set(start + Duration::seconds(10));
    let replica = s.replica("second");
    let missed = s.wait_event(schedule, "schedule.slots_missed").await.0;
    let missed: Vec<_> = missed["slots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| at(t.as_str().unwrap()))
        .collect();
    assert_eq!(
        missed,
        (1..=7).map(|i| start + Duration::seconds(i)).collect::<Vec<_>>()
    );
    for i in 8..=10 {
        s.wait_fired(schedule, start + Duration::seconds(i)).await;
    }
    s.settle().await;
    assert_eq!(s.fired(schedule).await.len(), before + 3);
    replica.stop().await;
    s.stop();
}

/// Bad cron, unknown zone, a timestamp with a space: refused by the command service,
/// naming the field, and nothing is written.
#[tokio::test]
async fn invalid_schedules_are_refused_with_the_field_at_fault() {
    let s = stack().await;
    let pipeline = s.pipeline("target", json!({})).await;
    for (spec, path, says) in [
        (json!({"cron": "61 * * * *"}), "/cron", "required form"),
        (json!({"cron": "* * * *"}), "/cron", "5 fields"),
        (
            json!({"cron": "* * * * *", "timezone": "Mars/Olympus"}),
            "/timezone",
            "IANA",
        ),
        (
            json!({"cron": "* * * * *", "start_at": "2027-01-02T00:00:00Z "}),
            "/start_at",
            "required form",
        ),
    ] {
        let mut body = json!({"pipeline_id": pipeline});
        body.as_object_mut().unwrap().extend(spec.as_object().unwrap().clone());
        let reply = s.send("schedule.create", body.clone()).await;
        assert_eq!(reply["error"]["code"], json!("validation_failed"), "{body} -> {reply}");
        assert_eq!(reply["error"]["details"]["reason"], json!("invalid_value"), "{reply}");
        assert_eq!(reply["error"]["details"]["path"], json!(path), "{reply}");
        assert!(reply["error"]["message"].as_str().unwrap().contains(says), "{reply}");
    }
    let schedules: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = 'schedule'")
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    assert_eq!(schedules, 0);
    s.stop();
}

/// A NATS restart loses the scheduler's ordered consumer (the server keeps it in memory);
/// the scheduler follows the event stream again as soon as it has reconnected, instead of
/// after async-nats's two missed idle heartbeats (about a minute), so a schedule created
/// right after the restart fires at its first slot.
#[tokio::test]
async fn a_schedule_created_just_after_a_nats_restart_fires() {
    let mut s = stack().await;
    let pipeline = s.pipeline("after-restart", json!({"max_active_runs": 100})).await;
    let replica = s.replica("solo");
    s.settle().await;
    s.nats.restart().await.unwrap();
    // The command service reconnects too: the request is sent until it is answered.
    let body = json!({"pipeline_id": pipeline, "cron": "* * * * * *", "overlap": "allow"});
    // A refusal comes at once while nobody listens (no responders, or this client still
    // reconnecting), so the attempts are spread over 20 s rather than counted.
    let mut reply = None;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        let request = s
            .client
            .request("flexcore.cmd.schedule.create", body.to_string().into());
        if let Ok(Ok(answer)) = tokio::time::timeout(std::time::Duration::from_secs(1), request).await {
            reply = Some(serde_json::from_slice::<serde_json::Value>(&answer.payload).unwrap());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let reply = reply.expect("schedule.create answered after the restart");
    assert_eq!(reply["ok"], json!(true), "{reply}");
    let schedule: uuid::Uuid = reply["aggregate_id"].as_str().unwrap().parse().unwrap();
    // One slot a second of clock time, until the scheduler has learnt of the schedule
    // from the stream and fired (each poll moves the clock on).
    flexcore_testkit::wait_until(std::time::Duration::from_secs(20), "the new schedule fired", || async {
        s.clock.set(s.clock.now() + Duration::seconds(1));
        !s.fired(schedule).await.is_empty()
    })
    .await
    .unwrap();
    replica.stop().await;
    s.stop();
}

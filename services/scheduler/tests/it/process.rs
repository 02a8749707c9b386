//! Real processes on the real clock: three `flexcore-scheduler` binaries, one killed with
//! SIGKILL and started again while a per-second schedule fires.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use chrono::Duration;
use serde_json::json;

use super::*;

fn spawn(s: &Stack, name: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_flexcore-scheduler"))
        .envs(s.nats.env_for("scheduler"))
        .env("FLEXCORE__SCHEDULER__INSTANCE_ID", name)
        .env("FLEXCORE__SCHEDULER__PRESENCE_INTERVAL_MS", "200")
        .env("FLEXCORE__SCHEDULER__TAKEOVER_GRACE_MS", "1000")
        .env("FLEXCORE__TELEMETRY__LOG_FORMAT", "text")
        .env(
            "FLEXCORE_CONFIG_DIR",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config"),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn killed_scheduler_processes_lose_no_slot_and_double_none() {
    let s = stack().await;
    let pipeline = s.pipeline("per-second", json!({"max_active_runs": 1000})).await;
    let mut schedules = Vec::new();
    for _ in 0..4 {
        let spec = json!({"cron": "* * * * * *", "overlap": "allow", "catchup_cap": 10});
        schedules.push(s.schedule(pipeline, spec).await);
    }
    let names = ["p1", "p2", "p3"];
    let owner = names
        .iter()
        .position(|me| {
            let mut view =
                flexcore_scheduler::members::Members::new((*me).to_owned(), std::time::Duration::from_secs(3));
            for n in names {
                view.heard(n, true, std::time::Instant::now());
            }
            view.owns(schedules[0])
        })
        .unwrap();
    let mut replicas: Vec<Child> = names.iter().map(|n| spawn(&s, n)).collect();
    // Let them replay and hear each other, then watch 12 seconds of slots.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let from = whole_second(chrono::Utc::now()) + Duration::seconds(1);
    let to = from + Duration::seconds(11);
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    // SIGKILL the owner of the first schedule: no goodbye, the others notice its silence.
    replicas[owner].kill().unwrap();
    replicas[owner].wait().unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    replicas[owner] = spawn(&s, names[owner]);
    for schedule in &schedules {
        for i in 0..=11 {
            s.wait_fired(*schedule, from + Duration::seconds(i)).await;
        }
    }
    for schedule in &schedules {
        let fired: Vec<_> = s
            .fired(*schedule)
            .await
            .into_iter()
            .filter(|t| *t >= from && *t <= to)
            .collect();
        let expected: Vec<_> = (0..=11).map(|i| from + Duration::seconds(i)).collect();
        assert_eq!(fired, expected);
        assert!(s.schedule_events(*schedule, "schedule.slot_skipped").await.is_empty());
        assert!(s.schedule_events(*schedule, "schedule.slots_missed").await.is_empty());
    }
    for mut r in replicas {
        let _ = r.kill();
        let _ = r.wait();
    }
    s.stop();
}

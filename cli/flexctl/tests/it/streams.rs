//! flexctl's streaming commands as a user runs them (the real binary, a private
//! nats-server with the system's streams): a reader that stops early (`| head`), `events
//! tail --last`, `events list`, `run logs --follow` on a finished run, and a NATS server
//! that goes away under a follower.

use std::io::{BufRead as _, BufReader, Read as _};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flexcore_testkit::TestNats;
use serde_json::{json, Value};
use uuid::Uuid;

/// flexctl against `nats`, logged in as its `flexctl` identity (role admin).
fn flexctl(nats: &TestNats, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flexctl"));
    c.args(["--nats-url", &nats.url])
        .args(args)
        .env("FLEXCORE__NATS__NKEY_SEED_FILE", nats.seed_file("flexctl"))
        .env("FLEXCORE__SECURITY__IDENTITIES_FILE", nats.identities_file())
        .env_remove("FLEXCORE__NATS__URL")
        .env_remove("FLEXCORE__TELEMETRY__OTLP_ENDPOINT");
    c
}

/// Waits for `child` to exit within `limit`; kills it and fails otherwise.
fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = if child.stderr.is_some() {
                stderr_of(child)
            } else {
                String::new()
            };
            panic!("flexctl did not exit within {limit:?}; its stderr:\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stderr_of(child: &mut Child) -> String {
    let mut text = String::new();
    child.stderr.take().unwrap().read_to_string(&mut text).unwrap();
    text
}

/// An event as the command service stores it.
fn event(position: u64, aggregate_type: &str, aggregate: Uuid, name: &str, actor: &str) -> (String, Value) {
    let subject = format!("flexcore.evt.{aggregate_type}.{aggregate}.{name}");
    let envelope = json!({
        "event_id": Uuid::now_v7(),
        "type": format!("{aggregate_type}.{name}"),
        "aggregate_type": aggregate_type,
        "aggregate_id": aggregate,
        "version": position,
        "global_position": position,
        "schema_version": 1,
        "recorded_at": chrono::Utc::now().to_rfc3339(),
        "data": {"n": position},
        "metadata": {"actor": actor},
    });
    (subject, envelope)
}

async fn publish(js: &async_nats::jetstream::Context, (subject, envelope): (String, Value)) {
    js.publish(subject, serde_json::to_vec(&envelope).unwrap().into())
        .await
        .unwrap()
        .await
        .unwrap();
}

/// Six events, alternately a pipeline's and a run's: positions 1..=6, runs at 2, 4, 6.
async fn six_events(nats: &TestNats) -> (Uuid, Uuid) {
    let js = nats.jetstream().await.unwrap();
    let (pipeline, run) = (Uuid::now_v7(), Uuid::now_v7());
    for position in 1..=6 {
        let e = if position % 2 == 1 {
            event(position, "pipeline", pipeline, "updated", "flexctl")
        } else {
            event(position, "run", run, "checkpointed", "runner")
        };
        publish(&js, e).await;
    }
    (pipeline, run)
}

fn positions(lines: &[String]) -> Vec<u64> {
    lines
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["global_position"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

/// A reader that closes its end of stdout (`flexctl … | head`): flexctl exits quietly,
/// with status 0 and no panic, for a one-shot command and for a follower.
#[tokio::test]
async fn a_reader_that_stops_early_ends_flexctl_quietly() {
    // A reader that has already gone: the first write fails with EPIPE, whatever the size.
    let (read_end, write_end) = std::io::pipe().unwrap();
    drop(read_end);
    let output = Command::new(env!("CARGO_BIN_EXE_flexctl"))
        .args(["completions", "bash"])
        .stdout(Stdio::from(write_end))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{:?}: {stderr}", output.status);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
        "{stderr}"
    );

    // A reader of one line (`| head -1`) under a follower.
    let nats = TestNats::start().await.unwrap();
    six_events(&nats).await;
    let mut child = flexctl(&nats, &["events", "tail", "--all", "--output", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(positions(&[first]), [1]);
    // The reader is gone; the next event makes flexctl write, and notice.
    publish(
        &nats.jetstream().await.unwrap(),
        event(7, "run", Uuid::now_v7(), "requested", "x"),
    )
    .await;
    let status = wait_exit(&mut child, Duration::from_secs(20));
    let stderr = stderr_of(&mut child);
    assert!(status.success(), "{status:?}: {stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
        "{stderr}"
    );
}

/// Reads `n` lines of `child`'s stdout, failing after `limit`.
fn read_lines(reader: &mut impl std::io::BufRead, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            assert!(!line.is_empty(), "flexctl's output ended early");
            line
        })
        .collect()
}

/// `events tail --last N` prints exactly the last N matching events (all of them when
/// fewer match), then the new ones.
#[tokio::test]
async fn tail_last_prints_exactly_the_last_n_matching_events_then_follows() {
    let cases: [(&[&str], &[u64]); 5] = [
        (&["--last", "1"], &[6]),
        (&["--last", "3"], &[4, 5, 6]),
        (&["--type", "run", "--last", "2"], &[4, 6]),
        (&["--type", "run", "--last", "4"], &[2, 4, 6]),
        (&["--type", "pipeline.updated", "--last", "1"], &[5]),
    ];
    for (i, (extra, expected)) in cases.into_iter().enumerate() {
        // A stream of its own for each case: only the six events.
        let nats = TestNats::start().await.unwrap();
        let (_, run) = six_events(&nats).await;
        let js = nats.jetstream().await.unwrap();
        let mut args = vec!["events", "tail", "--output", "json"];
        args.extend_from_slice(extra);
        let mut child = flexctl(&nats, &args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let stored = read_lines(&mut out, expected.len());
        // Then it follows: the next line is a new matching event, nothing older.
        let position = 100 + i as u64;
        publish(&js, event(position, "run", run, "checkpointed", "runner")).await;
        publish(&js, event(position + 50, "pipeline", Uuid::now_v7(), "updated", "x")).await;
        let next = read_lines(&mut out, 1);
        let _ = child.kill();
        let _ = child.wait();
        let expected_next = if extra.contains(&"pipeline.updated") {
            position + 50
        } else {
            position
        };
        assert_eq!(positions(&stored), expected, "{extra:?}");
        assert_eq!(positions(&next), [expected_next], "{extra:?}");
    }
}

/// `events list` prints the stored events that match and exits; `--output json` is one
/// envelope per line.
#[tokio::test]
async fn events_list_prints_the_matching_stored_events_and_exits() {
    let nats = TestNats::start().await.unwrap();
    let (pipeline, run) = six_events(&nats).await;
    let list = |extra: &[&str]| {
        let mut args = vec!["events", "list"];
        args.extend_from_slice(extra);
        let mut child = flexctl(&nats, &args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let status = wait_exit(&mut child, Duration::from_secs(20));
        let mut stdout = String::new();
        child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
        let stderr = stderr_of(&mut child);
        assert!(status.success(), "{extra:?}: {status:?} {stderr}");
        stdout.lines().map(str::to_owned).collect::<Vec<_>>()
    };
    assert_eq!(positions(&list(&["--output", "json"])), [1, 2, 3, 4, 5, 6]);
    assert_eq!(positions(&list(&["--output", "json", "--type", "run"])), [2, 4, 6]);
    let aggregate = pipeline.to_string();
    assert_eq!(
        positions(&list(&["--output", "json", "--aggregate", &aggregate, "--limit", "2"])),
        [1, 3]
    );
    let none: [String; 0] = [];
    assert_eq!(list(&["--since", "2999-01-01T00:00:00Z"]), none);
    assert_eq!(list(&["--until", "2000-01-01T00:00:00Z"]), none);
    assert_eq!(positions(&list(&["--output", "json", "--since", "1h"])).len(), 6);
    // Text: position, time, type, aggregate id, actor.
    let text = list(&["--type", "run.checkpointed", "--limit", "1"]);
    assert_eq!(text.len(), 1, "{text:?}");
    let fields: Vec<&str> = text[0].split_whitespace().collect();
    assert_eq!(fields[0], "2");
    assert!(
        fields[1].starts_with(&chrono::Utc::now().format("%Y-").to_string()),
        "{text:?}"
    );
    assert_eq!(&fields[2..], ["run.checkpointed", run.to_string().as_str(), "runner"]);

    // Bad input is refused with a clear error.
    let output = flexctl(&nats, &["events", "list", "--since", "yesterday"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("RFC 3339"));
}

/// A follower whose NATS server goes away says so on stderr and fails after
/// `--reconnect-timeout` instead of waiting silently forever.
#[tokio::test]
async fn a_follower_that_loses_nats_says_so_and_gives_up_after_the_reconnect_timeout() {
    let mut nats = TestNats::start().await.unwrap();
    six_events(&nats).await;
    let run = Uuid::now_v7().to_string();
    for args in [
        vec!["events", "tail", "--reconnect-timeout", "2s"],
        vec!["run", "logs", run.as_str(), "--follow", "--reconnect-timeout", "2s"],
    ] {
        if !nats.is_running() {
            nats.restart().await.unwrap();
        }
        let mut child = flexctl(&nats, &args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Following: it would wait for ever.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(child.try_wait().unwrap().is_none(), "{args:?} ended on its own");
        nats.kill();
        eprintln!("flexctl {args:?}: NATS killed");
        let status = wait_exit(&mut child, Duration::from_secs(20));
        let stderr = stderr_of(&mut child);
        assert!(!status.success(), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("lost the connection to NATS at {}, reconnecting", nats.url)),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains("could not reconnect within 2s"), "{args:?}: {stderr}");
    }
}

/// A scripted projection service answering `run.get` for `run` in the state `state` says.
fn answer_run_get(
    client: async_nats::Client,
    run: Uuid,
    state: std::sync::Arc<std::sync::Mutex<&'static str>>,
) -> tokio::task::JoinHandle<()> {
    use futures::StreamExt as _;
    tokio::spawn(async move {
        let mut requests = client.subscribe("flexcore.qry.run.get").await.unwrap();
        while let Some(message) = requests.next().await {
            let now = chrono::Utc::now();
            let state = *state.lock().unwrap();
            if state == "missing" {
                let reply = json!({"ok": false, "error": {
                    "code": "not_found", "message": "no such run",
                    "details": {"reason": "not_found", "path": "/id"}}});
                let reply_to = message.reply.unwrap();
                client
                    .publish(reply_to, serde_json::to_vec(&reply).unwrap().into())
                    .await
                    .unwrap();
                continue;
            }
            let view = json!({
                "run_id": run, "pipeline_id": Uuid::nil(), "pipeline_name": "p",
                "state": state, "trigger": "manual", "definition_version": 1,
                "attempt": 1, "attempts": [], "counters": {}, "records_total": 0,
                "last_state": {}, "requested_at": now, "updated_at": now, "aggregate_version": 3,
            });
            let reply = json!({"ok": true, "data": view, "position": 3});
            let reply_to = message.reply.unwrap();
            client
                .publish(reply_to, serde_json::to_vec(&reply).unwrap().into())
                .await
                .unwrap();
        }
    })
}

/// `run logs --follow` prints the lines stored and new ones, and exits (0) once the run is
/// over and every line is printed.
// Two threads: the scripted service answers while the test blocks on the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_logs_follow_ends_when_the_run_is_over_and_its_lines_are_printed() {
    let nats = TestNats::start().await.unwrap();
    let client = nats.client().await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let run = Uuid::now_v7();
    let state = std::sync::Arc::new(std::sync::Mutex::new("running"));
    let responder = answer_run_get(client, run, state.clone());
    let line = |n: u64| {
        let line = json!({"run_id": run, "attempt": 1, "step": 0, "plugin": "csv", "line": format!("line {n}"),
                          "at": chrono::Utc::now()});
        (format!("flexcore.log.run.{run}"), line)
    };
    for n in 1..=3 {
        publish(&js, line(n)).await;
    }
    let id = run.to_string();
    let mut child = flexctl(&nats, &["run", "logs", &id, "--follow", "--output", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut lines = read_lines(&mut out, 3);
    // Still running: it follows.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "run logs --follow ended while the run runs"
    );
    publish(&js, line(4)).await;
    lines.extend(read_lines(&mut out, 1));
    // Over: it ends on its own.
    *state.lock().unwrap() = "succeeded";
    let status = wait_exit(&mut child, Duration::from_secs(20));
    let stderr = stderr_of(&mut child);
    assert!(status.success(), "{status:?}: {stderr}");
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "", "no more lines");
    let texts: Vec<String> = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["line"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(texts, ["line 1", "line 2", "line 3", "line 4"]);
    responder.abort();
}

/// A follower whose NATS server comes back within `--reconnect-timeout` says so and goes
/// on with the events appended after it.
#[tokio::test]
async fn a_follower_goes_on_when_nats_comes_back() {
    let mut nats = TestNats::start().await.unwrap();
    six_events(&nats).await;
    let mut child = flexctl(
        &nats,
        &["events", "tail", "--output", "json", "--reconnect-timeout", "60s"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    tokio::time::sleep(Duration::from_secs(1)).await;
    nats.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    nats.restart().await.unwrap();
    publish(
        &nats.jetstream().await.unwrap(),
        event(7, "run", Uuid::now_v7(), "requested", "x"),
    )
    .await;
    let next = tokio::task::spawn_blocking(move || read_lines(&mut out, 1));
    let next = tokio::time::timeout(Duration::from_secs(60), next).await;
    let _ = child.kill();
    let _ = child.wait();
    let stderr = stderr_of(&mut child);
    let Ok(Ok(next)) = next else {
        panic!("no event after NATS came back: {next:?}; stderr:\n{stderr}")
    };
    assert_eq!(positions(&next), [7], "{stderr}");
    assert!(stderr.contains("lost the connection to NATS"), "{stderr}");
    assert!(stderr.contains("reconnected to NATS"), "{stderr}");
}

/// `run logs --follow` of a run the read model does not know fails with a clear error
/// (after 10 s: a run just requested may not be there yet) instead of waiting for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_logs_follow_of_an_unknown_run_fails_clearly() {
    let nats = TestNats::start().await.unwrap();
    let run = Uuid::now_v7();
    let state = std::sync::Arc::new(std::sync::Mutex::new("missing"));
    let responder = answer_run_get(nats.client().await.unwrap(), run, state);
    let id = run.to_string();
    let mut child = flexctl(&nats, &["run", "logs", &id, "--follow"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(30));
    let stderr = stderr_of(&mut child);
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains(&format!("there is no run {run}")), "{stderr}");
    responder.abort();
}

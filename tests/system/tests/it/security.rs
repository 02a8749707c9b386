//! The trust boundary on the real stack (issue 15, section 1).
//!
//! - The identity × subject matrix: each identity publishes to every class of subject
//!   through the real nats-server, and a message arrives exactly where its role may send
//!   it; no identity erases or rewires the record (stream delete, purge, update, consumer
//!   delete) or adds a stream (only `setup` creates and updates the system's), and nobody
//!   gets in anonymously.
//! - Forgeries, with the harness's unrestricted connection standing in for a bus whose
//!   permissions failed: a copy of `plugin.registered` with new grants, a `run.cancelled`,
//!   a work item, heartbeats and commands signed by the wrong identity or not at all. The
//!   runner, the scheduler and the command service act on none of them.
//! - The actor of every event is the verified identity, never a header.

use std::time::Duration;

use async_nats::jetstream;
use async_nats::HeaderMap;
use flexcore_contracts::envelope::{HEADER_MSG_ID, HEADER_TRANSACTION_ID};
use flexcore_contracts::work::WorkItem;
use flexcore_contracts::{envelope, subjects};
use flexcore_contracts::{EventMetadata, OpaqueJson};
use flexcore_eventstore::NewEvent;
use flexcore_system_tests::{Options, Stack};
use flexcore_testkit::nats::HARNESS;
use flexcore_testkit::TestNats;
use futures::StreamExt as _;
use serde_json::{json, Value};
use uuid::Uuid;

/// How long a message that is allowed takes at most to go round a local server.
const ROUND_TRIP: Duration = Duration::from_millis(1500);

/// Who may publish each class of subject: the oracle, written out here independently of
/// shared/security/src/permissions.rs.
fn matrix() -> Vec<(&'static str, &'static [&'static str])> {
    let run = "0190a000-0000-7000-8000-000000000001";
    let subjects: Vec<(String, &'static [&'static str])> = vec![
        (format!("flexcore.evt.plugin.{run}.registered"), &["command"]),
        (format!("flexcore.evt.run.{run}.cancelled"), &["command"]),
        (format!("flexcore.work.run.{run}"), &["command"]),
        ("flexcore.cmd.run.claim".into(), &["runner"]),
        ("flexcore.cmd.run.checkpoint".into(), &["runner"]),
        ("flexcore.cmd.run.succeed".into(), &["runner"]),
        ("flexcore.cmd.run.fail".into(), &["runner"]),
        ("flexcore.cmd.run.time_out".into(), &["runner", "scheduler"]),
        ("flexcore.cmd.run.retry".into(), &["scheduler"]),
        ("flexcore.cmd.schedule.skip_slot".into(), &["scheduler", "flexctl"]),
        ("flexcore.cmd.schedule.miss_slots".into(), &["scheduler"]),
        ("flexcore.cmd.run.request".into(), &["scheduler", "flexctl", "app"]),
        ("flexcore.cmd.pipeline.create".into(), &["flexctl", "app"]),
        ("flexcore.cmd.plugin.register".into(), &["flexctl", "app"]),
        ("flexcore.qry.run.get".into(), &["runner", "flexctl", "app"]),
        ("flexcore.qry.projection.rebuild".into(), &["flexctl"]),
        (format!("flexcore.sys.run.{run}.heartbeat"), &["runner"]),
        ("flexcore.sys.runner.presence".into(), &["runner"]),
        ("flexcore.sys.scheduler.presence".into(), &["scheduler"]),
        ("flexcore.sys.projection.runs.position".into(), &["projection"]),
        (format!("flexcore.log.run.{run}"), &["runner"]),
        ("$O.flexcore-plugins.C.forged".into(), &["flexctl"]),
        // The projection answers queries into the inboxes of those who may query.
        ("_INBOX.runner.stolen".into(), &["projection"]),
        ("_INBOX.command.stolen".into(), &[]),
        ("_INBOX.scheduler.stolen".into(), &[]),
        ("anything.else".into(), &[]),
    ];
    subjects
        .into_iter()
        .map(|(s, who)| (&*Box::leak(s.into_boxed_str()), who))
        .collect()
}

const IDENTITIES: [&str; 7] = [
    "command",
    "projection",
    "scheduler",
    "runner",
    "flexctl",
    "app",
    "setup",
];

/// Whether a message `who` publishes on `subject` reaches a subscriber (the harness).
async fn arrives(nats: &TestNats, harness: &async_nats::Client, who: &str, subject: &str) -> bool {
    let mut sub = harness.subscribe(subject.to_owned()).await.unwrap();
    harness.flush().await.unwrap();
    let sender = nats.client_as(who).await.unwrap();
    let marker = Uuid::new_v4().to_string();
    // A denied publish is dropped by the server (and reported to the sender only).
    let _ = sender.publish(subject.to_owned(), marker.clone().into()).await;
    let _ = sender.flush().await;
    let got = tokio::time::timeout(ROUND_TRIP, async {
        while let Some(m) = sub.next().await {
            if m.payload == marker.as_bytes() {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    drop(sender);
    got
}

#[tokio::test]
async fn every_identity_publishes_exactly_what_its_role_may() {
    flexcore_testkit::init_tracing();
    let nats = TestNats::start().await.unwrap();
    let harness = nats.client().await.unwrap();
    let mut checks = Vec::new();
    for (subject, allowed) in matrix() {
        for who in IDENTITIES {
            checks.push((who, subject, allowed.contains(&who)));
        }
    }
    let results = futures::future::join_all(
        checks
            .iter()
            .map(|(who, subject, _)| arrives(&nats, &harness, who, subject)),
    )
    .await;
    let wrong: Vec<String> = checks
        .iter()
        .zip(results)
        .filter(|((_, _, expected), got)| expected != got)
        .map(|((who, subject, expected), _)| {
            format!(
                "{who} → {subject}: {}",
                if *expected {
                    "denied, should pass"
                } else {
                    "passed, should be denied"
                }
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} checks wrong:\n{}",
        wrong.len(),
        checks.len(),
        wrong.join("\n")
    );

    // Nobody gets in without an identity.
    let anonymous = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(3))
        .max_reconnects(Some(1))
        .connect(&nats.url);
    let anonymous = tokio::time::timeout(Duration::from_secs(10), anonymous).await;
    assert!(!matches!(anonymous, Ok(Ok(_))), "an anonymous client got in");
    // Nor with a key the server does not know.
    let stranger = nkeys::KeyPair::new_user().seed().unwrap();
    let strange = async_nats::ConnectOptions::with_nkey(stranger)
        .connection_timeout(Duration::from_secs(3))
        .max_reconnects(Some(1))
        .connect(&nats.url);
    let strange = tokio::time::timeout(Duration::from_secs(10), strange).await;
    assert!(!matches!(strange, Ok(Ok(_))), "an unknown NKey got in");
}

/// Sends a JetStream API call as `who`; the reply, or `None` when nothing answers (the
/// server dropped a denied request).
async fn api_call(nats: &TestNats, who: &str, call: &str, body: Value) -> Option<Value> {
    let client = nats.client_as(who).await.unwrap();
    let reply = tokio::time::timeout(
        Duration::from_secs(2),
        client.request(format!("$JS.API.{call}"), serde_json::to_vec(&body).unwrap().into()),
    )
    .await;
    match reply {
        Ok(Ok(message)) => serde_json::from_slice(&message.payload).ok(),
        _ => None,
    }
}

#[tokio::test]
async fn no_identity_erases_or_rewires_the_record() {
    flexcore_testkit::init_tracing();
    let nats = TestNats::start().await.unwrap();
    // The streams as setup created them (TestNats::start runs it as `setup`).
    let js = jetstream::new(nats.client().await.unwrap());
    js.publish("flexcore.evt.run.x.requested", "kept".into())
        .await
        .unwrap()
        .await
        .unwrap();
    js.publish("flexcore.log.run.x", "kept".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let events = js.get_stream(subjects::EVENTS_STREAM).await.unwrap();
    events
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some("projection-runs".to_owned()),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut attempts = Vec::new();
    for who in IDENTITIES {
        for (call, body) in [
            (format!("STREAM.DELETE.{}", subjects::EVENTS_STREAM), json!({})),
            (format!("STREAM.PURGE.{}", subjects::EVENTS_STREAM), json!({})),
            (format!("STREAM.PURGE.{}", subjects::LOGS_STREAM), json!({})),
            (format!("STREAM.DELETE.{}", subjects::WORK_STREAM), json!({})),
            (
                format!("STREAM.MSG.DELETE.{}", subjects::EVENTS_STREAM),
                json!({"seq": 1}),
            ),
            (
                format!("STREAM.UPDATE.{}", subjects::LOGS_STREAM),
                json!({"name": subjects::LOGS_STREAM, "subjects": [subjects::LOGS_WILDCARD], "max_msgs": 1}),
            ),
            (
                format!("STREAM.UPDATE.{}", subjects::EVENTS_STREAM),
                json!({"name": subjects::EVENTS_STREAM, "subjects": [subjects::EVENTS_WILDCARD, "flexcore.log.>"]}),
            ),
            (
                format!("CONSUMER.DELETE.{}.projection-runs", subjects::EVENTS_STREAM),
                json!({}),
            ),
            // A stream of one's own (here harmless; with the system's subjects it would
            // capture them).
            (
                "STREAM.CREATE.SHADOW".to_owned(),
                json!({"name": "SHADOW", "subjects": ["shadow.>"]}),
            ),
        ] {
            // Setup's job is to set the streams' limits (its seed lives only in the setup
            // job); that it may is checked by the setup tests.
            if who == "setup" && call.starts_with("STREAM.UPDATE") {
                continue;
            }
            // The projection's own consumer: it may delete it (to rebuild a view).
            if who == "projection" && call.starts_with("CONSUMER.DELETE") {
                continue;
            }
            attempts.push((who, call, body));
        }
    }
    // All at once: a denied call is only seen as a time-out.
    let replies = futures::future::join_all(
        attempts
            .iter()
            .map(|(who, call, body)| api_call(&nats, who, call, body.clone())),
    )
    .await;
    for ((who, call, _), reply) in attempts.iter().zip(replies) {
        assert!(reply.is_none(), "{who} may {call}: {reply:?}");
    }
    // Everything is still there.
    let mut events = js.get_stream(subjects::EVENTS_STREAM).await.unwrap();
    assert_eq!(events.info().await.unwrap().state.messages, 1);
    let mut logs = js.get_stream(subjects::LOGS_STREAM).await.unwrap();
    let info = logs.info().await.unwrap();
    assert_eq!(info.state.messages, 1);
    assert_eq!(info.config.max_messages, -1, "the logs' limits were rewritten");
    assert!(js.get_stream(subjects::WORK_STREAM).await.is_ok());
    assert!(js.get_stream("SHADOW").await.is_err(), "a stream was created");
}

/// A run's pipeline: the generator (wasm) into the discard loader; returns its id.
async fn pipeline(s: &Stack, name: &str) -> String {
    let generator = s
        .register(
            "flexcore-plugin-generator",
            &format!("{name}-gen"),
            "extractor",
            json!({}),
        )
        .await;
    let discard = s
        .register(
            "flexcore-plugin-discard",
            &format!("{name}-discard"),
            "loader",
            json!({}),
        )
        .await;
    s.ok(
        "pipeline.create",
        json!({"name": name, "owner": "o", "steps": [
            {"plugin": generator, "config": {"records": 50}}, {"plugin": discard}]}),
    )
    .await["aggregate_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Waits until the events stream has a message on `subject`.
async fn wait_on_stream(s: &Stack, subject: &str) {
    flexcore_testkit::wait_until(Duration::from_secs(20), subject, || async {
        s.js.get_stream(subjects::EVENTS_STREAM)
            .await
            .unwrap()
            .get_last_raw_message_by_subject(subject)
            .await
            .is_ok()
    })
    .await
    .unwrap();
}

/// The last message on `subject` in the events stream.
async fn last_event(s: &Stack, subject: &str) -> (HeaderMap, Value) {
    let stream = s.js.get_stream(subjects::EVENTS_STREAM).await.unwrap();
    let message = stream.get_last_raw_message_by_subject(subject).await.unwrap();
    (message.headers, serde_json::from_slice(&message.payload).unwrap())
}

/// The projection applies only events the relay signed. The attack: an event committed
/// in Postgres but not yet published (the relay is down), and a forged message claiming
/// its position on the stream (unsigned, signed by another role, with the relay's
/// signature of another message). Postgres confirms that the position exists, so only the
/// signature tells them apart: the read model must show the real event once the relay
/// publishes it, never the forgery.
#[tokio::test]
async fn forged_events_never_reach_the_read_models() {
    let mut s = Stack::start(Options::default()).await;
    let digest = format!("sha256:{}", "c".repeat(64));
    let first = s
        .ok(
            "plugin.register",
            json!({"name": "real-a", "version": "1.0.0", "kind": "extractor", "module_digest": digest}),
        )
        .await;
    let first_id: Uuid = first["aggregate_id"].as_str().unwrap().parse().unwrap();
    let subject = subjects::event("plugin", first_id, "plugin.registered");
    wait_on_stream(&s, &subject).await;
    let (relay_headers, template) = last_event(&s, &subject).await;

    // The relay stops; a second registration is committed, not published.
    s.stop_command().await;
    let real_id = Uuid::now_v7();
    let mut data = template["data"].clone();
    data["name"] = json!("real-b");
    data["plugin_id"] = json!(real_id);
    let event = NewEvent {
        event_id: Uuid::now_v7(),
        aggregate_type: "plugin".into(),
        aggregate_id: real_id,
        version: 1,
        event_type: "plugin.registered".into(),
        schema_version: 1,
        data: OpaqueJson::parse(&data.to_string()).unwrap(),
        metadata: EventMetadata::default(),
    };
    flexcore_system_tests::append_directly(&s.db.pool, "plugin.register", event.clone()).await;
    let (position, transaction): (i64, String) =
        sqlx::query_as("SELECT global_position, transaction_id::text FROM events WHERE event_id = $1")
            .bind(event.event_id)
            .fetch_one(&s.db.pool)
            .await
            .unwrap();

    // The forgery: the same position, transaction and ids, another name.
    let mut envelope = template.clone();
    envelope["event_id"] = json!(event.event_id);
    envelope["aggregate_id"] = json!(real_id);
    envelope["global_position"] = json!(position);
    envelope["data"] = data.clone();
    envelope["data"]["name"] = json!("phantom");
    let real_subject = subjects::event("plugin", real_id, "plugin.registered");
    let body = serde_json::to_vec(&envelope).unwrap();
    let with_transaction = |mut h: HeaderMap| {
        h.insert(HEADER_TRANSACTION_ID, transaction.as_str());
        h
    };
    let forgeries = [
        with_transaction(HeaderMap::new()),
        {
            let mut h = with_transaction(HeaderMap::new());
            s.nats.identity("runner").unwrap().sign(&real_subject, &mut h, &body);
            h
        },
        {
            let mut h = with_transaction(relay_headers);
            h.insert(HEADER_MSG_ID, Uuid::new_v4().to_string().as_str());
            h
        },
    ];
    for headers in forgeries {
        s.js.publish_with_headers(real_subject.clone(), headers, body.clone().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }

    // The relay comes back and publishes the real event.
    s.start_command().await;
    let got = s
        .query("plugin.get", json!({"id": real_id, "min_position": position}))
        .await;
    assert_eq!(got["ok"], json!(true), "{got}");
    assert_eq!(
        got["data"]["name"],
        json!("real-b"),
        "a forged event reached the read model: {got}"
    );
}

#[tokio::test]
async fn forged_grants_in_the_event_stream_are_never_run() {
    let s = Stack::start(Options {
        runner: true,
        ..Options::default()
    })
    .await;
    let pipeline_id = pipeline(&s, "forged").await;
    let plugin_id: Uuid = sqlx::query_scalar(
        "SELECT aggregate_id FROM events WHERE event_type = 'plugin.registered' AND data->>'name' = 'forged-gen'",
    )
    .fetch_one(&s.db.pool)
    .await
    .unwrap();
    let subject = subjects::event("plugin", plugin_id, "plugin.registered");
    wait_on_stream(&s, &subject).await;
    let (_, mut envelope) = last_event(&s, &subject).await;
    // The attacker's copy: `/` read-write and the host's environment.
    envelope["event_id"] = json!(Uuid::new_v4());
    envelope["data"]["grants"] = json!({"dirs": [{"host_path": "/", "guest_path": "/host", "access": "read_write"}], "env": ["FLEXCORE__DATABASE__URL"]});
    let body = serde_json::to_vec(&envelope).unwrap();
    let forgeries = [
        ("unsigned", HeaderMap::new()),
        ("signed by a runner", {
            let mut h = HeaderMap::new();
            s.nats.identity("runner").unwrap().sign(&subject, &mut h, &body);
            h
        }),
        ("the relay's signature of another message", {
            let (mut h, _) = last_event(&s, &subject).await;
            h.insert(HEADER_MSG_ID, Uuid::new_v4().to_string().as_str());
            h
        }),
    ];
    for (what, headers) in forgeries {
        s.js.publish_with_headers(subject.clone(), headers, body.clone().into())
            .await
            .unwrap()
            .await
            .unwrap();
        let run = s.ok("run.request", json!({"pipeline_id": pipeline_id})).await["aggregate_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let failed = s.wait_run_event(&run, "run.failed", Duration::from_secs(30)).await;
        assert_eq!(failed["error"]["code"], "unverified_definition", "{what}: {failed}");
        assert_eq!(failed["final"], json!(true), "{what}: {failed}");
        assert!(
            !s.event_types(&run).await.iter().any(|t| t == "run.succeeded"),
            "{what}: the run went on"
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn forged_cancellations_and_work_items_are_ignored() {
    let s = Stack::start(Options {
        runner: true,
        ..Options::default()
    })
    .await;
    let generator = s
        .register("flexcore-plugin-generator", "slow-gen", "extractor", json!({}))
        .await;
    let discard = s
        .register("flexcore-plugin-discard", "slow-discard", "loader", json!({}))
        .await;
    let pipeline_id = s
        .ok(
            "pipeline.create",
            json!({"name": "slow", "owner": "o", "steps": [
                {"plugin": generator, "config": {"records": 3_000_000u64, "state_every": 100_000}}, {"plugin": discard}]}),
        )
        .await["aggregate_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let run = s.ok("run.request", json!({"pipeline_id": pipeline_id})).await["aggregate_id"]
        .as_str()
        .unwrap()
        .to_owned();
    s.wait_run_event(&run, "run.claimed", Duration::from_secs(30)).await;
    // A cancellation that the relay did not sign, on core NATS and in the stream.
    let run_id: Uuid = run.parse().unwrap();
    let subject = subjects::event("run", run_id, "run.cancelled");
    let forged = json!({"run_id": run, "reason": "forged"}).to_string();
    s.client.publish(subject.clone(), forged.clone().into()).await.unwrap();
    s.js.publish(subject, forged.into()).await.unwrap().await.unwrap();
    // A work item for a run nobody requested.
    let phantom = Uuid::new_v4();
    let item = WorkItem {
        run_id: phantom,
        attempt: 1,
        pipeline_id: pipeline_id.parse().unwrap(),
        correlation_id: None,
    };
    s.js.publish(subjects::work_run(phantom), serde_json::to_vec(&item).unwrap().into())
        .await
        .unwrap()
        .await
        .unwrap();
    let done = s.wait_run_event(&run, "run.succeeded", Duration::from_secs(120)).await;
    assert_eq!(done["attempt"], json!(1), "{done}");
    assert!(!s.event_types(&run).await.iter().any(|t| t == "run.cancelled"));
    assert!(
        s.event_types(&phantom.to_string()).await.is_empty(),
        "the forged work item was claimed"
    );
    // The forged item is gone from the queue (terminated, not redelivered).
    flexcore_testkit::wait_until(Duration::from_secs(30), "the work queue is empty", || async {
        let mut work = s.js.get_stream(subjects::WORK_STREAM).await.unwrap();
        work.info().await.unwrap().state.messages == 0
    })
    .await
    .unwrap();
    s.stop().await;
}

/// A command as raw bytes with `headers`; the reply.
async fn raw(s: &Stack, subject: &str, body: &Value, headers: HeaderMap) -> Value {
    let reply = s
        .client
        .request_with_headers(subject.to_owned(), headers, serde_json::to_vec(body).unwrap().into())
        .await
        .unwrap();
    serde_json::from_slice(&reply.payload).unwrap()
}

fn signed(s: &Stack, who: &str, subject: &str, body: &Value) -> HeaderMap {
    let mut headers = HeaderMap::new();
    s.nats
        .identity(who)
        .unwrap()
        .sign(subject, &mut headers, &serde_json::to_vec(body).unwrap());
    headers
}

#[tokio::test]
async fn commands_are_authorised_by_the_verified_identity_and_recorded_as_its_actor() {
    let s = Stack::start(Options::default()).await;
    let digest = flexcore_plugin_store::upload(
        &s.js,
        &flexcore_system_tests::plugins::wasm("flexcore-plugin-generator"),
    )
    .await
    .unwrap();
    let register = "flexcore.cmd.plugin.register";
    let granted = json!({"name": "g", "version": "1.0.0", "kind": "extractor", "module_digest": digest,
                         "grants": {"dirs": [{"host_path": "/", "guest_path": "/host", "access": "read_write"}]}});
    let process =
        json!({"name": "p", "version": "1.0.0", "kind": "extractor", "runtime": "process", "executable": "/bin/sh"});
    let plain = json!({"name": "plain", "version": "1.0.0", "kind": "extractor", "module_digest": digest});
    let unauthorized = |reply: &Value, what: &str| {
        assert_eq!(reply["ok"], json!(false), "{what}: {reply}");
        assert_eq!(reply["error"]["code"], "unauthorized", "{what}: {reply}");
    };
    // Grants and the process runtime: not from applications, signed or not.
    for body in [&granted, &process] {
        unauthorized(&raw(&s, register, body, HeaderMap::new()).await, "unsigned");
        unauthorized(&raw(&s, register, body, signed(&s, "app", register, body)).await, "app");
        unauthorized(
            &raw(&s, register, body, signed(&s, "runner", register, body)).await,
            "runner",
        );
    }
    // A signature of another body, a tampered one, or an unknown key.
    let mut moved = signed(&s, HARNESS, register, &plain);
    unauthorized(
        &raw(&s, register, &granted, moved.clone()).await,
        "signature of another body",
    );
    moved.insert(
        envelope::HEADER_SIGNER,
        nkeys::KeyPair::new_user().public_key().as_str(),
    );
    unauthorized(&raw(&s, register, &plain, moved).await, "unknown signer");
    // Runner commands from anyone but a runner.
    let succeed = "flexcore.cmd.run.succeed";
    let body = json!({"run_id": Uuid::new_v4(), "attempt": 1, "counters": {}});
    for who in ["app", "flexctl", "scheduler"] {
        unauthorized(&raw(&s, succeed, &body, signed(&s, who, succeed, &body)).await, who);
    }
    unauthorized(&raw(&s, succeed, &body, HeaderMap::new()).await, "unsigned run.succeed");
    // The admin may; the actor is the identity, not a header.
    let mut headers = signed(&s, HARNESS, register, &granted);
    headers.insert("Flexcore-Actor", "someone-else");
    let reply = raw(&s, register, &granted, headers).await;
    assert_eq!(reply["ok"], json!(true), "{reply}");
    let plain_reply = raw(&s, register, &plain, HeaderMap::new()).await;
    assert_eq!(plain_reply["ok"], json!(true), "{plain_reply}");
    let actors: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT data->>'name', metadata->>'actor' FROM events WHERE event_type = 'plugin.registered' ORDER BY global_position",
    )
    .fetch_all(&s.db.pool)
    .await
    .unwrap();
    assert_eq!(
        actors,
        vec![
            ("g".to_owned(), Some(HARNESS.to_owned())),
            ("plain".to_owned(), Some("unsigned".to_owned()))
        ]
    );
    // Only those two were written.
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    assert_eq!(count, 2);
    s.stop().await;
}

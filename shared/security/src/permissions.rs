//! The NATS permissions of each role: exactly the subjects its code uses, and of the
//! JetStream API only the calls on its own streams and consumers.
//!
//! Subjects (shared/contracts/src/subjects.rs): commands `flexcore.cmd.<aggregate>.<action>`
//! (served by `command`), events `flexcore.evt.…` and run work `flexcore.work.run.<id>`
//! (published by the relay of `command` only), queries `flexcore.qry.<view>.<operation>`
//! (served by `projection`), plugin logs `flexcore.log.run.<id>` (from runners),
//! `flexcore.sys.…` (signed positions, heartbeats and presence), the scheduler's snapshot
//! `flexcore.state.scheduler.<chunk>` (schedulers alone write and read it), and every identity's
//! replies under its own inbox prefix `_INBOX.<name>.>`. Applications may follow the
//! events (read-only).
//!
//! Stream administration belongs to `setup` alone: it creates the streams (events, work,
//! logs) and the plugin bucket and applies changed settings; it cannot delete, purge or
//! read anything. No other identity creates, updates, deletes or purges a stream; the
//! runners remove the work items they have taken (a work queue's acknowledgement). Each
//! service creates and uses only its own durable consumers (the projection recreates its
//! own to rebuild a view); no other identity but `admin` (read-only) may touch them.

use flexcore_contracts::subjects;

use crate::identity::inbox_prefix;
use crate::Role;

/// The projection service's durable consumers on `FLEXCORE_EVENTS` (one per view).
pub const PROJECTION_CONSUMERS: [&str; 5] = [
    "projection-plugins",
    "projection-pipelines",
    "projection-runs",
    "projection-schedules",
    "projection-audit",
];
/// The runners' durable consumer on `FLEXCORE_WORK`.
pub const RUNNER_CONSUMER: &str = "flexcore-runner";
/// The stream of the plugin object store (bucket `flexcore-plugins`).
pub const PLUGINS_STREAM: &str = "OBJ_flexcore-plugins";
/// Subjects of the plugin object store (chunks and metadata).
pub const PLUGINS_SUBJECTS: &str = "$O.flexcore-plugins.>";

/// What one identity may publish and subscribe to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    /// Subjects it may publish to.
    pub publish_allow: Vec<String>,
    /// Exceptions to `publish_allow`.
    pub publish_deny: Vec<String>,
    /// Subjects it may subscribe to.
    pub subscribe_allow: Vec<String>,
    /// Whether it may answer the requests it receives (on their reply subjects only).
    pub allow_responses: bool,
}

/// The roles that send queries: the projection service answers into their inboxes.
pub const QUERY_SENDERS: [Role; 4] = [Role::Runner, Role::Admin, Role::Client, Role::Gateway];

fn api(call: &str) -> String {
    format!("$JS.API.{call}")
}

/// Reading a stream: its info, and messages by sequence or last-by-subject.
fn stream_reads(stream: &str) -> Vec<String> {
    vec![
        api(&format!("STREAM.INFO.{stream}")),
        api(&format!("STREAM.MSG.GET.{stream}")),
        api(&format!("DIRECT.GET.{stream}")),
        api(&format!("DIRECT.GET.{stream}.>")),
    ]
}

/// Using (and creating) the durable consumer `name` on `stream`: both the 2.9 and the
/// 2.10+ forms of the create call.
fn durable(stream: &str, name: &str) -> Vec<String> {
    vec![
        api(&format!("CONSUMER.CREATE.{stream}.{name}")),
        api(&format!("CONSUMER.CREATE.{stream}.{name}.>")),
        api(&format!("CONSUMER.DURABLE.CREATE.{stream}.{name}")),
        api(&format!("CONSUMER.INFO.{stream}.{name}")),
        api(&format!("CONSUMER.MSG.NEXT.{stream}.{name}")),
        format!("$JS.ACK.{stream}.{name}.>"),
    ]
}

/// Ephemeral (ordered) consumers on `stream`, created, read and deleted by their owner.
fn ephemeral(stream: &str) -> Vec<String> {
    vec![
        api(&format!("CONSUMER.CREATE.{stream}")),
        api(&format!("CONSUMER.CREATE.{stream}.>")),
        api(&format!("CONSUMER.INFO.{stream}.*")),
        api(&format!("CONSUMER.MSG.NEXT.{stream}.*")),
        api(&format!("CONSUMER.DELETE.{stream}.*")),
    ]
}

/// The services' durable consumers, out of reach of everyone but their owner.
fn others_durables(except: Role) -> Vec<String> {
    let mut deny = Vec::new();
    // Operators and the gateway (for `/status`) may look at them (lag, queue depth), no more.
    let calls: &[&str] = if matches!(except, Role::Admin | Role::Gateway) {
        &["CREATE", "DELETE", "MSG.NEXT"]
    } else {
        &["CREATE", "DELETE", "INFO", "MSG.NEXT"]
    };
    let mut guard = |stream: &str, name: &str| {
        for call in calls {
            deny.push(api(&format!("CONSUMER.{call}.{stream}.{name}")));
        }
        deny.push(api(&format!("CONSUMER.CREATE.{stream}.{name}.>")));
        deny.push(api(&format!("CONSUMER.DURABLE.CREATE.{stream}.{name}")));
        deny.push(format!("$JS.ACK.{stream}.{name}.>"));
    };
    if except != Role::Projection {
        for name in PROJECTION_CONSUMERS {
            guard(subjects::EVENTS_STREAM, name);
        }
    }
    if except != Role::Runner {
        guard(subjects::WORK_STREAM, RUNNER_CONSUMER);
    }
    deny
}

/// The commands runners send.
const RUNNER_COMMANDS: [&str; 5] = ["run.claim", "run.checkpoint", "run.succeed", "run.fail", "run.time_out"];
/// The commands schedulers send.
const SCHEDULER_COMMANDS: [&str; 5] = [
    "run.request",
    "run.retry",
    "run.time_out",
    "schedule.skip_slot",
    "schedule.miss_slots",
];

/// The subjects of `commands`.
fn command_subjects(commands: &[&str]) -> Vec<String> {
    commands
        .iter()
        .map(|command| format!("flexcore.cmd.{command}"))
        .collect()
}

/// The commands only runners and schedulers send (not `run.request`, which applications
/// send too), out of reach of people and applications.
fn service_commands() -> Vec<String> {
    let mut commands = command_subjects(&RUNNER_COMMANDS);
    for subject in command_subjects(&SCHEDULER_COMMANDS) {
        if subject != "flexcore.cmd.run.request" && !commands.contains(&subject) {
            commands.push(subject);
        }
    }
    commands
}

/// The system's streams: the event log, the work queue, the run logs, the plugin
/// modules and the scheduler's snapshot.
pub const SYSTEM_STREAMS: [&str; 5] = [
    subjects::EVENTS_STREAM,
    subjects::WORK_STREAM,
    subjects::LOGS_STREAM,
    PLUGINS_STREAM,
    subjects::SCHEDULER_STATE_STREAM,
];

/// Creating, changing, deleting and purging streams: denied to everyone (the few
/// exceptions are made in [`of`]). Any stream, not only the system's: whoever can reach
/// the API cannot add a stream that captures the system's subjects.
fn stream_administration() -> Vec<String> {
    let mut deny: Vec<String> = ["STREAM.CREATE", "STREAM.UPDATE", "STREAM.DELETE", "STREAM.PURGE"]
        .iter()
        .map(|call| api(&format!("{call}.*")))
        .collect();
    for stream in [subjects::EVENTS_STREAM, subjects::WORK_STREAM, subjects::LOGS_STREAM] {
        deny.push(api(&format!("STREAM.MSG.DELETE.{stream}")));
    }
    deny
}

/// The permissions of an identity called `name` with `role`.
pub fn of(role: Role, name: &str) -> Permissions {
    let inbox = format!("{}.>", inbox_prefix(name));
    let events = subjects::EVENTS_STREAM;
    let work = subjects::WORK_STREAM;
    let logs = subjects::LOGS_STREAM;
    let mut p = Permissions {
        subscribe_allow: vec![inbox],
        ..Permissions::default()
    };
    let own = |list: &mut Vec<String>, items: &[&str]| list.extend(items.iter().map(|s| (*s).to_owned()));
    match role {
        Role::Command => {
            own(
                &mut p.publish_allow,
                &[subjects::EVENTS_WILDCARD, subjects::WORK_WILDCARD],
            );
            p.publish_allow.push(api("INFO"));
            for stream in [events, work] {
                p.publish_allow.extend(stream_reads(stream));
            }
            p.publish_allow.extend(stream_reads(PLUGINS_STREAM));
            p.subscribe_allow.push(subjects::COMMANDS_WILDCARD.to_owned());
            p.allow_responses = true;
        }
        Role::Projection => {
            own(&mut p.publish_allow, &[subjects::PROJECTION_POSITIONS_WILDCARD]);
            p.publish_allow.push(api("INFO"));
            p.publish_allow.extend(stream_reads(events));
            for name in PROJECTION_CONSUMERS {
                p.publish_allow.extend(durable(events, name));
                p.publish_allow.push(api(&format!("CONSUMER.DELETE.{events}.{name}")));
            }
            own(
                &mut p.subscribe_allow,
                &[subjects::QUERIES_WILDCARD, subjects::PROJECTION_POSITIONS_WILDCARD],
            );
            // Answers go into the inboxes of the identities that may query ([`in_deployment`]),
            // not through `allow_responses`: nats-server records the reply subject of every
            // message it delivers to an identity with `allow_responses`, JetStream
            // deliveries included, which cost it most of a core at 1,000 events/s
            // (five views, each delivery recorded; docs/benchmarks.md).
        }
        Role::Scheduler => {
            p.publish_allow.extend(command_subjects(&SCHEDULER_COMMANDS));
            own(&mut p.publish_allow, &[subjects::SCHEDULER_PRESENCE]);
            p.publish_allow.push(api("INFO"));
            p.publish_allow.extend(stream_reads(events));
            p.publish_allow.extend(ephemeral(events));
            // Its snapshot: written and read by schedulers alone.
            own(&mut p.publish_allow, &[subjects::SCHEDULER_STATE_WILDCARD]);
            p.publish_allow.extend(stream_reads(subjects::SCHEDULER_STATE_STREAM));
            own(
                &mut p.subscribe_allow,
                &[subjects::SCHEDULER_PRESENCE, subjects::RUN_HEARTBEATS_WILDCARD],
            );
        }
        Role::Runner => {
            p.publish_allow.extend(command_subjects(&RUNNER_COMMANDS));
            own(
                &mut p.publish_allow,
                &[
                    "flexcore.qry.run.get",
                    subjects::LOGS_WILDCARD,
                    subjects::RUN_HEARTBEATS_WILDCARD,
                    subjects::RUNNER_PRESENCE,
                ],
            );
            p.publish_allow.push(api("INFO"));
            p.publish_allow.extend(stream_reads(events));
            p.publish_allow.extend(stream_reads(work));
            p.publish_allow.push(api(&format!("STREAM.MSG.DELETE.{work}")));
            p.publish_allow.extend(durable(work, RUNNER_CONSUMER));
            p.publish_allow.push(api(&format!("STREAM.INFO.{logs}")));
            // Module downloads: the object store's ordered push consumer and its flow control.
            p.publish_allow.extend(stream_reads(PLUGINS_STREAM));
            p.publish_allow.extend(ephemeral(PLUGINS_STREAM));
            p.publish_allow.push("$JS.FC.>".to_owned());
            own(
                &mut p.subscribe_allow,
                &["flexcore.evt.run.>", subjects::RUN_HEARTBEATS_WILDCARD],
            );
        }
        Role::Admin => {
            own(
                &mut p.publish_allow,
                &[
                    subjects::COMMANDS_WILDCARD,
                    subjects::QUERIES_WILDCARD,
                    "$JS.API.>",
                    "$JS.ACK.>",
                    "$JS.FC.>",
                    PLUGINS_SUBJECTS,
                ],
            );
            p.publish_deny.extend(stream_administration());
            // Backfills request slots and record the skipped ones.
            p.publish_deny.extend(
                service_commands()
                    .into_iter()
                    .filter(|c| c != "flexcore.cmd.schedule.skip_slot"),
            );
            own(
                &mut p.subscribe_allow,
                &[subjects::EVENTS_WILDCARD, subjects::LOGS_WILDCARD, "flexcore.sys.>"],
            );
        }
        Role::Client => {
            own(
                &mut p.publish_allow,
                &[subjects::COMMANDS_WILDCARD, subjects::QUERIES_WILDCARD],
            );
            p.publish_deny.extend(service_commands());
            p.publish_deny.push("flexcore.qry.projection.rebuild".to_owned());
            // Following events (e.g. its run's, as examples/python does): core subscriptions
            // and ordered consumers of the events stream, read-only.
            p.publish_allow.push(api("INFO"));
            p.publish_allow.extend(stream_reads(events));
            p.publish_allow.extend(ephemeral(events));
            p.publish_allow.push("$JS.FC.>".to_owned());
            p.subscribe_allow.push(subjects::EVENTS_WILDCARD.to_owned());
        }
        Role::Gateway => {
            // Commands on behalf of its callers (the command service checks each against
            // the caller's API role), queries, and the live views of events and logs.
            own(
                &mut p.publish_allow,
                &[subjects::COMMANDS_WILDCARD, subjects::QUERIES_WILDCARD],
            );
            p.publish_deny.extend(
                service_commands()
                    .into_iter()
                    .filter(|c| c != "flexcore.cmd.schedule.skip_slot"),
            );
            p.publish_allow.push(api("INFO"));
            for stream in [events, logs] {
                p.publish_allow.extend(stream_reads(stream));
                p.publish_allow.extend(ephemeral(stream));
            }
            p.publish_allow.push(api(&format!("STREAM.INFO.{work}")));
            p.publish_allow
                .push(api(&format!("CONSUMER.INFO.{work}.{RUNNER_CONSUMER}")));
            // Module uploads of admin callers (`POST /plugins`, multipart): the object's
            // info (is the digest stored?) and its chunks and metadata. Content-addressed:
            // whoever loads a module checks its bytes against its digest.
            p.publish_allow.extend(stream_reads(PLUGINS_STREAM));
            own(&mut p.publish_allow, &[PLUGINS_SUBJECTS]);
            p.publish_allow.push("$JS.FC.>".to_owned());
            own(
                &mut p.subscribe_allow,
                &[subjects::SCHEDULER_PRESENCE, subjects::RUNNER_PRESENCE],
            );
        }
        Role::Setup => {
            p.publish_allow.push(api("INFO"));
            for stream in SYSTEM_STREAMS {
                for call in ["STREAM.INFO", "STREAM.CREATE", "STREAM.UPDATE"] {
                    p.publish_allow.push(api(&format!("{call}.{stream}")));
                }
            }
        }
    }
    p.publish_deny.extend(others_durables(role));
    if role != Role::Admin {
        p.publish_deny
            .extend(stream_administration().into_iter().filter(|deny| {
                // Setup creates and updates the streams; runners take work items off the queue.
                !(role == Role::Setup && (deny.contains(".STREAM.CREATE.") || deny.contains(".STREAM.UPDATE.")))
                    && !(role == Role::Runner && deny.ends_with(&format!("MSG.DELETE.{work}")))
            }));
    }
    p
}

/// The permissions of identity `name` with `role` in a deployment of `identities` (the
/// whole identities file): [`of`], and for the projection service the inboxes of the
/// identities that send queries ([`QUERY_SENDERS`]), where its answers go.
pub fn in_deployment(role: Role, name: &str, identities: &[crate::TrustedIdentity]) -> Permissions {
    let mut p = of(role, name);
    if role == Role::Projection {
        for sender in identities.iter().filter(|i| QUERY_SENDERS.contains(&i.role)) {
            p.publish_allow.push(format!("{}.>", inbox_prefix(&sender.name)));
        }
    }
    p
}

/// The permissions block of `p` in nats-server configuration syntax.
pub fn server_block(p: &Permissions) -> String {
    let list = |items: &[String]| items.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ");
    let mut block = format!("permissions: {{ publish: {{ allow: [{}]", list(&p.publish_allow));
    if !p.publish_deny.is_empty() {
        block.push_str(&format!(", deny: [{}]", list(&p.publish_deny)));
    }
    block.push_str(&format!(" }}, subscribe: {{ allow: [{}] }}", list(&p.subscribe_allow)));
    if p.allow_responses {
        block.push_str(", allow_responses: true");
    }
    block.push_str(" }");
    block
}

/// Whether `role`'s permissions let it publish on `subject` (what the server would allow;
/// the gateway asks before sending a command its identity may not).
pub fn may_publish(role: Role, subject: &str) -> bool {
    let p = of(role, "x");
    p.publish_allow.iter().any(|a| matches(a, subject)) && !p.publish_deny.iter().any(|d| matches(d, subject))
}

/// A NATS subject pattern match (`*` one token, `>` the rest).
fn matches(pattern: &str, subject: &str) -> bool {
    let mut pattern = pattern.split('.');
    let mut subject = subject.split('.');
    loop {
        match (pattern.next(), subject.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(p), Some(s)) if p == s => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_command_service_publishes_events_and_work() {
        for role in Role::ALL {
            assert_eq!(
                may_publish(
                    role,
                    "flexcore.evt.plugin.0190a000-0000-7000-8000-000000000001.registered"
                ),
                role == Role::Command,
                "{role}"
            );
            assert_eq!(
                may_publish(role, "flexcore.work.run.x"),
                role == Role::Command,
                "{role}"
            );
        }
    }

    #[test]
    fn only_schedulers_write_and_read_the_scheduler_snapshot() {
        for role in Role::ALL {
            assert_eq!(
                may_publish(role, "flexcore.state.scheduler.0"),
                role == Role::Scheduler,
                "{role}"
            );
            if role != Role::Admin {
                assert_eq!(
                    may_publish(role, "$JS.API.STREAM.MSG.GET.FLEXCORE_SCHEDULER"),
                    role == Role::Scheduler,
                    "{role}"
                );
            }
        }
        assert!(!may_publish(Role::Scheduler, "$JS.API.STREAM.PURGE.FLEXCORE_SCHEDULER"));
        assert!(!may_publish(Role::Scheduler, "flexcore.state.other.0"));
    }

    #[test]
    fn nobody_erases_the_record() {
        for role in Role::ALL {
            for stream in ["FLEXCORE_EVENTS", "FLEXCORE_WORK", "FLEXCORE_LOGS"] {
                for call in ["STREAM.DELETE", "STREAM.PURGE"] {
                    assert!(
                        !may_publish(role, &format!("$JS.API.{call}.{stream}")),
                        "{role} {call} {stream}"
                    );
                }
            }
            for stream in SYSTEM_STREAMS {
                for call in ["STREAM.CREATE", "STREAM.UPDATE"] {
                    assert_eq!(
                        may_publish(role, &format!("$JS.API.{call}.{stream}")),
                        role == Role::Setup,
                        "{role} {call} {stream}"
                    );
                }
            }
            // Nor a new stream that would capture the system's subjects.
            assert!(!may_publish(role, "$JS.API.STREAM.CREATE.SHADOW"), "{role}");
            assert!(
                !may_publish(role, "$JS.API.STREAM.MSG.DELETE.FLEXCORE_EVENTS"),
                "{role}"
            );
        }
    }

    #[test]
    fn durable_consumers_belong_to_their_service() {
        for role in Role::ALL {
            assert_eq!(
                may_publish(role, "$JS.API.CONSUMER.DELETE.FLEXCORE_EVENTS.projection-runs"),
                role == Role::Projection,
                "{role}"
            );
            assert_eq!(
                may_publish(role, "$JS.API.CONSUMER.MSG.NEXT.FLEXCORE_WORK.flexcore-runner"),
                role == Role::Runner,
                "{role}"
            );
            assert!(
                !may_publish(role, "$JS.API.CONSUMER.CREATE.FLEXCORE_EVENTS.projection-runs.>")
                    || role == Role::Projection
            );
        }
        // An ordered consumer of the scheduler is fine, a projection's is not.
        assert!(may_publish(
            Role::Scheduler,
            "$JS.API.CONSUMER.CREATE.FLEXCORE_EVENTS.abc.flexcore.evt.>"
        ));
        assert!(!may_publish(
            Role::Scheduler,
            "$JS.API.CONSUMER.CREATE.FLEXCORE_EVENTS.projection-runs.flexcore.evt.>"
        ));
    }

    #[test]
    fn the_gateway_sends_what_callers_may_and_reads_the_streams() {
        let g = |subject| may_publish(Role::Gateway, subject);
        assert!(g("flexcore.cmd.pipeline.create"));
        assert!(g("flexcore.cmd.run.request"));
        assert!(g("flexcore.cmd.schedule.skip_slot"), "backfills");
        assert!(!g("flexcore.cmd.run.succeed"));
        assert!(!g("flexcore.cmd.run.claim"));
        assert!(!g("flexcore.evt.run.x.cancelled"));
        assert!(!g("flexcore.work.run.x"));
        assert!(g("flexcore.qry.run.list"));
        assert!(g("$JS.API.CONSUMER.CREATE.FLEXCORE_LOGS"));
        assert!(g("$JS.API.CONSUMER.CREATE.FLEXCORE_EVENTS.abc.flexcore.evt.>"));
        assert!(g("$JS.API.CONSUMER.INFO.FLEXCORE_WORK.flexcore-runner"));
        assert!(!g("$JS.API.CONSUMER.MSG.NEXT.FLEXCORE_WORK.flexcore-runner"));
        assert!(!g("$JS.API.CONSUMER.DELETE.FLEXCORE_WORK.flexcore-runner"));
        assert!(!g("$JS.API.STREAM.DELETE.FLEXCORE_EVENTS"));
        assert!(g("$O.flexcore-plugins.C.x"), "module uploads");
        assert!(g("$JS.API.STREAM.INFO.OBJ_flexcore-plugins"));
        assert!(!g("$JS.API.STREAM.PURGE.OBJ_flexcore-plugins"));
        assert!(!g("$JS.API.STREAM.MSG.DELETE.OBJ_flexcore-plugins"));
    }

    #[test]
    fn setup_administers_streams_and_nothing_else() {
        let p = of(Role::Setup, "setup");
        assert_eq!(p.subscribe_allow, ["_INBOX.setup.>"]);
        assert!(!p.allow_responses);
        for subject in [
            "flexcore.cmd.plugin.register",
            "flexcore.evt.run.x.cancelled",
            "flexcore.qry.run.get",
            "$JS.API.STREAM.DELETE.FLEXCORE_EVENTS",
            "$JS.API.STREAM.PURGE.FLEXCORE_LOGS",
            "$JS.API.STREAM.MSG.GET.FLEXCORE_EVENTS",
            "$JS.API.CONSUMER.CREATE.FLEXCORE_EVENTS",
            "$O.flexcore-plugins.C.x",
        ] {
            assert!(!may_publish(Role::Setup, subject), "{subject}");
        }
        assert!(may_publish(Role::Setup, "$JS.API.STREAM.INFO.OBJ_flexcore-plugins"));
    }

    #[test]
    fn service_commands_only_from_their_services() {
        assert!(may_publish(Role::Runner, "flexcore.cmd.run.succeed"));
        assert!(!may_publish(Role::Client, "flexcore.cmd.run.succeed"));
        assert!(!may_publish(Role::Scheduler, "flexcore.cmd.run.succeed"));
        assert!(!may_publish(Role::Admin, "flexcore.cmd.run.succeed"));
        assert!(may_publish(Role::Admin, "flexcore.cmd.run.request"));
        assert!(may_publish(Role::Scheduler, "flexcore.cmd.schedule.skip_slot"));
        assert!(!may_publish(Role::Client, "flexcore.cmd.schedule.skip_slot"));
        assert!(may_publish(Role::Client, "flexcore.cmd.pipeline.create"));
        assert!(may_publish(Role::Client, "$JS.API.CONSUMER.CREATE.FLEXCORE_EVENTS"));
        assert!(!may_publish(Role::Client, "$JS.API.STREAM.INFO.FLEXCORE_WORK"));
        assert!(!may_publish(
            Role::Client,
            "$JS.API.CONSUMER.MSG.NEXT.FLEXCORE_WORK.flexcore-runner"
        ));
        assert!(!may_publish(Role::Client, "$O.flexcore-plugins.C.x"));
        assert!(!may_publish(Role::Client, "flexcore.qry.projection.rebuild"));
        assert!(may_publish(Role::Admin, "flexcore.qry.projection.rebuild"));
    }

    #[test]
    fn only_admins_rebuild_projections() {
        // The gateway relays HTTP callers' rebuilds only for API role admin (its queries.rs).
        for role in Role::ALL {
            assert_eq!(
                may_publish(role, "flexcore.qry.projection.rebuild"),
                matches!(role, Role::Admin | Role::Gateway),
                "{role}"
            );
        }
    }

    #[test]
    fn replies_only_in_the_own_inbox() {
        for role in Role::ALL {
            let p = of(role, "alice");
            assert!(p.subscribe_allow.contains(&"_INBOX.alice.>".to_owned()));
            assert!(!p.subscribe_allow.iter().any(|s| s == "_INBOX.>"));
        }
    }

    #[test]
    fn the_block_is_server_syntax() {
        let block = server_block(&of(Role::Command, "command"));
        assert!(
            block.starts_with("permissions: { publish: { allow: [\"flexcore.evt.>\""),
            "{block}"
        );
        assert!(block.ends_with(", allow_responses: true }"), "{block}");
    }

    #[test]
    fn the_projection_answers_into_the_inboxes_of_those_who_query() {
        let identities: Vec<crate::TrustedIdentity> = [
            ("app", Role::Client),
            ("flexctl", Role::Admin),
            ("runner-1", Role::Runner),
            ("command", Role::Command),
            ("scheduler-a", Role::Scheduler),
        ]
        .into_iter()
        .map(|(name, role)| crate::TrustedIdentity {
            name: name.to_owned(),
            role,
            public_key: String::new(),
        })
        .collect();
        let p = in_deployment(Role::Projection, "projection", &identities);
        assert!(!p.allow_responses);
        for inbox in ["_INBOX.app.>", "_INBOX.flexctl.>", "_INBOX.runner-1.>"] {
            assert!(p.publish_allow.iter().any(|a| a == inbox), "{inbox}");
        }
        // Not into the command service's inbox (its publish acknowledgements) nor the
        // scheduler's.
        assert!(!p.publish_allow.iter().any(|a| a.starts_with("_INBOX.command")));
        assert!(!p.publish_allow.iter().any(|a| a.starts_with("_INBOX.scheduler")));
        assert_eq!(in_deployment(Role::Runner, "r", &identities), of(Role::Runner, "r"));
    }
}

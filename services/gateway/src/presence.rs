//! The runners and schedulers the gateway has heard: their presence announcements
//! (`flexcore.sys.runner.presence` every 2 s, `flexcore.sys.scheduler.presence` every
//! second), kept while recent and signed by an identity of the announcing role.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flexcore_contracts::subjects;
use flexcore_contracts::work::{RunnerPresence, SchedulerPresence};
use flexcore_security::{Role, Trust, PRESENCE_FRESHNESS};
use futures::StreamExt as _;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

/// How long an announcement counts.
pub const RECENT: Duration = Duration::from_secs(10);

/// What has been heard: each replica's last announcement, when, and the service version it
/// named (`Flexcore-Service`; not signed, so shown, never relied on).
#[derive(Debug, Default)]
pub struct Presence {
    runners: Mutex<BTreeMap<String, (HeardRunner, Instant)>>,
    schedulers: Mutex<BTreeMap<String, (HeardScheduler, Instant)>>,
}

/// A runner heard recently, with the version it named.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HeardRunner {
    /// Its announcement.
    #[serde(flatten)]
    pub presence: RunnerPresence,
    /// `flexcore-runner/<version>`, if it named one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// A scheduler replica heard recently, with the version it named.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HeardScheduler {
    /// Its instance id.
    pub instance: String,
    /// `flexcore-scheduler/<version>`, if it named one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl Presence {
    /// Listens until `shutdown`.
    pub fn start(nats: async_nats::Client, trust: Trust, shutdown: CancellationToken) -> Arc<Self> {
        let presence = Arc::new(Self::default());
        let heard = presence.clone();
        tokio::spawn(async move {
            let subscribed = futures::future::try_join(
                nats.subscribe(subjects::RUNNER_PRESENCE),
                nats.subscribe(subjects::SCHEDULER_PRESENCE),
            )
            .await;
            let (runners, schedulers) = match subscribed {
                Ok(both) => both,
                Err(error) => {
                    tracing::error!(%error, "cannot subscribe to presence announcements; /status will show none");
                    return;
                }
            };
            let mut both = futures::stream::select(runners, schedulers);
            loop {
                let message = tokio::select! {
                    () = shutdown.cancelled() => return,
                    m = both.next() => match m { Some(m) => m, None => return },
                };
                let runner = message.subject.as_str() == subjects::RUNNER_PRESENCE;
                let version = flexcore_service::reply::service_of(message.headers.as_ref());
                let role = if runner { Role::Runner } else { Role::Scheduler };
                if let Err(error) = trust.verify_message(&message, &[role], Some(PRESENCE_FRESHNESS)) {
                    tracing::debug!(%error, subject = %message.subject, "ignoring an unverified presence announcement");
                    continue;
                }
                if runner {
                    if let Ok(p) = serde_json::from_slice::<RunnerPresence>(&message.payload) {
                        let mut runners = heard.runners.lock();
                        if p.alive {
                            let id = p.runner_id.clone();
                            runners.insert(id, (HeardRunner { presence: p, version }, Instant::now()));
                        } else {
                            runners.remove(&p.runner_id);
                        }
                    }
                } else if let Ok(p) = serde_json::from_slice::<SchedulerPresence>(&message.payload) {
                    let mut schedulers = heard.schedulers.lock();
                    if p.alive {
                        let heard = HeardScheduler {
                            instance: p.instance.clone(),
                            version,
                        };
                        schedulers.insert(p.instance, (heard, Instant::now()));
                    } else {
                        schedulers.remove(&p.instance);
                    }
                }
            }
        });
        presence
    }

    /// The runners heard recently.
    pub fn runners(&self) -> Vec<HeardRunner> {
        let mut runners = self.runners.lock();
        runners.retain(|_, (_, at)| at.elapsed() < RECENT);
        runners.values().map(|(heard, _)| heard.clone()).collect()
    }

    /// The scheduler replicas heard recently.
    pub fn schedulers(&self) -> Vec<HeardScheduler> {
        let mut schedulers = self.schedulers.lock();
        schedulers.retain(|_, (_, at)| at.elapsed() < RECENT);
        schedulers.values().map(|(heard, _)| heard.clone()).collect()
    }
}

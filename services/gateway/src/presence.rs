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

/// What has been heard.
#[derive(Debug, Default)]
pub struct Presence {
    runners: Mutex<BTreeMap<String, (RunnerPresence, Instant)>>,
    schedulers: Mutex<BTreeMap<String, Instant>>,
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
                let role = if runner { Role::Runner } else { Role::Scheduler };
                if let Err(error) = trust.verify_message(&message, &[role], Some(PRESENCE_FRESHNESS)) {
                    tracing::debug!(%error, subject = %message.subject, "ignoring an unverified presence announcement");
                    continue;
                }
                if runner {
                    if let Ok(p) = serde_json::from_slice::<RunnerPresence>(&message.payload) {
                        let mut runners = heard.runners.lock();
                        if p.alive {
                            runners.insert(p.runner_id.clone(), (p, Instant::now()));
                        } else {
                            runners.remove(&p.runner_id);
                        }
                    }
                } else if let Ok(p) = serde_json::from_slice::<SchedulerPresence>(&message.payload) {
                    let mut schedulers = heard.schedulers.lock();
                    if p.alive {
                        schedulers.insert(p.instance, Instant::now());
                    } else {
                        schedulers.remove(&p.instance);
                    }
                }
            }
        });
        presence
    }

    /// The runners heard recently.
    pub fn runners(&self) -> Vec<RunnerPresence> {
        let mut runners = self.runners.lock();
        runners.retain(|_, (_, at)| at.elapsed() < RECENT);
        runners.values().map(|(p, _)| p.clone()).collect()
    }

    /// The scheduler replicas heard recently.
    pub fn schedulers(&self) -> Vec<String> {
        let mut schedulers = self.schedulers.lock();
        schedulers.retain(|_, at| at.elapsed() < RECENT);
        schedulers.keys().cloned().collect()
    }
}

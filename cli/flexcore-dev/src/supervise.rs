//! How `flexctl dev` stops and keeps its processes up: the signals that stop the whole
//! stack (Ctrl-C, SIGTERM, SIGHUP), and the restart policy of a process that exits on its
//! own (restarted with back-off; given up on after repeated fast crashes), and what it
//! keeps of each process to start it again.

use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::Instant;

/// The signals that stop `flexctl dev`, listened to from the moment this is made (before,
/// SIGTERM and SIGHUP would kill the process and leave its children running).
#[derive(Debug)]
pub struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Starts listening for SIGINT (Ctrl-C), SIGTERM and SIGHUP.
    pub fn listen() -> std::io::Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// Waits for one of them; returns how to name it.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "Ctrl-C",
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.hangup.recv() => "SIGHUP",
        }
    }
}

/// A process that exits within this long of starting has crashed fast.
pub const FAST: Duration = Duration::from_secs(10);
/// Fast crashes in a row after which a process is given up on.
pub const MAX_FAST_CRASHES: u32 = 5;
/// The wait before the first restart; doubled for each fast crash in a row.
pub const FIRST_DELAY: Duration = Duration::from_secs(1);

/// What to do about a process that exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start it again after this long.
    Restart(Duration),
    /// It crashed this many times in a row within [`FAST`] of starting: give up.
    GiveUp(u32),
}

/// The restart policy of one process: a crash soon after a start counts towards giving
/// up and doubles the wait; a process that ran a while starts with a clean slate.
#[derive(Debug, Clone, Default)]
pub struct Restarts {
    fast_in_a_row: u32,
}

impl Restarts {
    /// The decision for an exit after the process ran for `ran_for`.
    pub fn after_exit(&mut self, ran_for: Duration) -> Decision {
        if ran_for < FAST {
            self.fast_in_a_row += 1;
        } else {
            self.fast_in_a_row = 0;
        }
        if self.fast_in_a_row >= MAX_FAST_CRASHES {
            return Decision::GiveUp(self.fast_in_a_row);
        }
        Decision::Restart(FIRST_DELAY * 2u32.pow(self.fast_in_a_row))
    }
}

/// Something `flexctl dev` started and stops at the end.
pub(crate) struct Started {
    pub(crate) name: &'static str,
    pub(crate) child: Child,
    /// How to start it again when it exits on its own (`None`: it is not restarted).
    pub(crate) relaunch: Option<Relaunch>,
    /// When it was (last) started.
    pub(crate) since: Instant,
    /// Its restart policy.
    pub(crate) restarts: Restarts,
}

impl Started {
    pub(crate) fn new(name: &'static str, child: Child, relaunch: Option<Relaunch>) -> Self {
        Self {
            name,
            child,
            relaunch,
            since: Instant::now(),
            restarts: Restarts::default(),
        }
    }
}

/// How to start a supervised process again: its command line and environment, its
/// colour, and where to report that it exited.
pub(crate) struct Relaunch {
    template: Command,
    colour: usize,
    exited: Exited,
}

/// Where a supervised process reports that its output ended (it exited).
pub(crate) type Exited = tokio::sync::mpsc::UnboundedSender<&'static str>;

impl Relaunch {
    /// Spawns `template` as `name` and keeps it to spawn again.
    pub(crate) fn spawn(
        name: &'static str,
        template: Command,
        colour: usize,
        exited: &Exited,
    ) -> anyhow::Result<(Child, Self)> {
        let relaunch = Self {
            template,
            colour,
            exited: exited.clone(),
        };
        Ok((relaunch.again(name)?, relaunch))
    }

    pub(crate) fn again(&self, name: &'static str) -> anyhow::Result<Child> {
        let template = self.template.as_std();
        let mut command = Command::new(template.get_program());
        command.args(template.get_args());
        for (key, value) in template.get_envs() {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        if let Some(dir) = template.get_current_dir() {
            command.current_dir(dir);
        }
        crate::dev::spawn_prefixed(name, command, self.colour, Some(self.exited.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_crashes_back_off_then_are_given_up_on() {
        let mut restarts = Restarts::default();
        let fast = Duration::from_secs(1);
        assert_eq!(restarts.after_exit(fast), Decision::Restart(Duration::from_secs(2)));
        assert_eq!(restarts.after_exit(fast), Decision::Restart(Duration::from_secs(4)));
        assert_eq!(restarts.after_exit(fast), Decision::Restart(Duration::from_secs(8)));
        assert_eq!(restarts.after_exit(fast), Decision::Restart(Duration::from_secs(16)));
        assert_eq!(restarts.after_exit(fast), Decision::GiveUp(MAX_FAST_CRASHES));
    }

    #[test]
    fn a_process_that_ran_a_while_starts_with_a_clean_slate() {
        let mut restarts = Restarts::default();
        assert_eq!(
            restarts.after_exit(Duration::from_secs(3600)),
            Decision::Restart(FIRST_DELAY)
        );
        for _ in 0..3 {
            restarts.after_exit(Duration::ZERO);
        }
        assert_eq!(restarts.after_exit(FAST), Decision::Restart(FIRST_DELAY));
        assert_eq!(restarts.after_exit(Duration::ZERO), Decision::Restart(FIRST_DELAY * 2));
    }
}

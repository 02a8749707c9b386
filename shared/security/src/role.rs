//! The roles of identities.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What an identity is for: decides its NATS permissions, the commands it may send and
/// whose signatures a receiver accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// `flexcore-command`: serves commands; its relay publishes (and signs) every event
    /// and work item.
    Command,
    /// `flexcore-projection`: serves queries; reads events with its durable consumers.
    Projection,
    /// `flexcore-scheduler`: sends the commands of fired, skipped and missed slots,
    /// retries and time-outs.
    Scheduler,
    /// `flexcore-runner`: takes run work and sends the attempt's commands.
    Runner,
    /// Operators (`flexctl`): every client command, plugin administration (grants, the
    /// process runtime, module uploads), projection rebuilds, stream inspection.
    Admin,
    /// Applications: pipelines, runs, schedules and sandboxed plugins without grants.
    Client,
    /// Stream administration (`flexcore-command setup`): creates the JetStream streams and
    /// the plugin bucket and applies changed stream settings; the only identity that may.
    /// Sends no commands, reads no messages, deletes and purges nothing.
    Setup,
    /// `flexcore-gateway`: the HTTP API. Sends commands on behalf of the callers it
    /// authenticated (named, with their [`ApiRole`], in its signature), queries for them,
    /// follows the event and log streams for their live views.
    Gateway,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 8] = [
        Role::Command,
        Role::Projection,
        Role::Scheduler,
        Role::Runner,
        Role::Admin,
        Role::Client,
        Role::Setup,
        Role::Gateway,
    ];

    /// The role's name as written in the identities file.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Command => "command",
            Role::Projection => "projection",
            Role::Scheduler => "scheduler",
            Role::Runner => "runner",
            Role::Admin => "admin",
            Role::Client => "client",
            Role::Setup => "setup",
            Role::Gateway => "gateway",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?}: one of {}", Role::ALL.map(Role::as_str).join(", ")))
    }
}

/// What a caller of the HTTP API may do (the gateway authenticates it; the command service
/// checks each command the gateway sends on its behalf against this role).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiRole {
    /// Reads: every query and live stream.
    Viewer,
    /// A viewer that also runs and cancels runs, pauses and resumes pipelines and
    /// schedules, and backfills schedules.
    Operator,
    /// Everything an operator does, and plugins, pipelines and schedules created, changed,
    /// archived and deleted (what role `admin` may send).
    Admin,
}

impl ApiRole {
    /// Every API role, least first.
    pub const ALL: [ApiRole; 3] = [ApiRole::Viewer, ApiRole::Operator, ApiRole::Admin];

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiRole::Viewer => "viewer",
            ApiRole::Operator => "operator",
            ApiRole::Admin => "admin",
        }
    }
}

impl fmt::Display for ApiRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ApiRole {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ApiRole::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| format!("unknown API role {s:?}: one of viewer, operator, admin"))
    }
}

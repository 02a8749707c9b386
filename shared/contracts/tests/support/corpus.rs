//! Valid bodies of every command and query, generated from a seed: each optional field
//! present or not, values drawn from the whole range the contract allows (multi-byte
//! labels of the longest length, every zone, crons with names, steps and lists, STATEs
//! with nested data), referring to the aggregates of a [`World`] so that, on the live
//! services, they reach real aggregates and the checks behind decoding.
//!
//! Ids a body creates (`pipeline_id` of `pipeline.create`, …) are drawn here and added to
//! the world at once (unless the caller says the body will not be sent as it is), whether
//! or not the service accepts it: what is generated depends on the seed alone, never on
//! replies, so a run can be replayed.
//!
//! - [`commands`]: the bodies of commands; [`queries`]: the bodies of queries.

mod commands;
mod queries;

use flexcore_contracts::commands::Command;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::Rng;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::values::{int, uuid, CONFIG_SCHEMAS, USABLE_CONFIG_SCHEMAS};

/// Every command and query name (`pipeline.create`, `run.list`), commands first.
pub fn names() -> Vec<(Kind, String)> {
    let commands = Command::ALL.iter().map(|(a, c)| (Kind::Command, format!("{a}.{c}")));
    let queries = flexcore_contracts::queries::ALL
        .iter()
        .map(|q| (Kind::Query, (*q).to_owned()));
    commands.chain(queries).collect()
}

/// Whether a name is a command's or a query's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `flexcore.cmd.<aggregate>.<action>`.
    Command,
    /// `flexcore.qry.<view>.<operation>`.
    Query,
}

impl Kind {
    /// The directory of its schemas under `schemas/`.
    pub fn dir(self) -> &'static str {
        match self {
            Self::Command => "commands",
            Self::Query => "queries",
        }
    }

    /// The subject of `name` (`pipeline.create`).
    pub fn subject(self, name: &str) -> String {
        let (a, b) = name.split_once('.').unwrap_or((name, ""));
        match self {
            Self::Command => flexcore_contracts::subjects::command(a, b),
            Self::Query => flexcore_contracts::subjects::query(a, b),
        }
    }
}

/// A plugin version steps may use.
#[derive(Debug, Clone)]
pub struct Plugin {
    /// `name@version`.
    pub reference: String,
    /// Its id.
    pub id: Uuid,
    /// `extractor`, `transformer` or `loader`.
    pub kind: &'static str,
    /// A config its config schema accepts.
    pub config: Value,
}

/// The aggregates bodies refer to.
#[derive(Debug, Clone, Default)]
pub struct World {
    /// Registered (or about to be) plugin versions.
    pub plugins: Vec<Plugin>,
    /// Pipeline ids.
    pub pipelines: Vec<Uuid>,
    /// Run ids.
    pub runs: Vec<Uuid>,
    /// Schedule ids.
    pub schedules: Vec<Uuid>,
    /// Command ids already sent, some of which are sent again.
    pub command_ids: Vec<Uuid>,
}

/// The seeded generator of valid bodies over a world.
pub struct Corpus {
    /// The generator.
    pub rng: StdRng,
    /// What bodies refer to.
    pub world: World,
    /// Whether ids the next bodies create join the world (a caller about to mutate a
    /// body turns this off: the service will most likely refuse it).
    pub record: bool,
    /// How many of the newest aggregates of each list bodies leave alone, when there are
    /// older ones: requests sent concurrently would reach them before they exist.
    pub settle: usize,
}

impl World {
    /// A world of ids only (for tests that never reach a service): a few plugins of each
    /// kind, pipelines, runs and schedules.
    pub fn synthetic(rng: &mut StdRng) -> Self {
        let mut world = Self::default();
        for (i, kind) in ["extractor", "extractor", "transformer", "loader", "loader"]
            .into_iter()
            .enumerate()
        {
            let (_, config) = CONFIG_SCHEMAS[i % USABLE_CONFIG_SCHEMAS];
            world.add_plugin(&format!("p{i}"), "1.0.0", kind, config);
        }
        world.pipelines = (0..4).map(|_| uuid(rng)).collect();
        world.runs = (0..4).map(|_| uuid(rng)).collect();
        world.schedules = (0..3).map(|_| uuid(rng)).collect();
        world
    }

    /// Adds plugin `name@version` whose config schema accepts `config` (JSON text).
    pub fn add_plugin(&mut self, name: &str, version: &str, kind: &'static str, config: &str) {
        self.plugins.push(Plugin {
            reference: format!("{name}@{version}"),
            id: flexcore_contracts::ids::plugin_id(name, version),
            kind,
            config: serde_json::from_str(config).unwrap_or_else(|_| json!({})),
        });
    }

    /// The plugins of `kind`.
    fn of_kind(&self, kind: &str) -> Vec<&Plugin> {
        self.plugins.iter().filter(|p| p.kind == kind).collect()
    }
}

/// Inserts `key` with the value of `f` into `body` with probability `p`.
fn maybe(body: &mut Map<String, Value>, rng: &mut StdRng, p: f64, key: &str, f: impl FnOnce(&mut StdRng) -> Value) {
    if rng.random_bool(p) {
        let value = f(rng);
        body.insert(key.to_owned(), value);
    }
}

impl Corpus {
    /// A generator over `world` seeded with `seed`.
    pub fn new(seed: u64, world: World) -> Self {
        Self {
            rng: super::rng(seed),
            world,
            record: true,
            settle: 0,
        }
    }

    /// `items` without the newest [`Self::settle`], unless that leaves none; often only
    /// the newest few of the rest (the older ones are likelier archived, deleted, done).
    fn settled<'i, T>(&mut self, items: &'i [T]) -> &'i [T] {
        let items = match items.len().checked_sub(self.settle) {
            Some(n) if n > 0 => &items[..n],
            _ => items,
        };
        if self.settle > 0 && self.rng.random_bool(0.6) {
            &items[items.len().saturating_sub(16)..]
        } else {
            items
        }
    }

    /// An id of the list `ids` picks (a random one when it is empty).
    fn pick(&mut self, ids: fn(&World) -> &Vec<Uuid>) -> Value {
        let all = ids(&self.world).clone();
        let chosen = self.settled(&all).choose(&mut self.rng).copied();
        Value::from(chosen.unwrap_or_else(|| uuid(&mut self.rng)).to_string())
    }

    /// The id of a plugin of the world (a random one when there is none).
    fn plugin_id(&mut self) -> Value {
        let ids: Vec<Uuid> = self.world.plugins.iter().map(|p| p.id).collect();
        let chosen = self.settled(&ids).choose(&mut self.rng).copied();
        Value::from(chosen.unwrap_or_else(|| uuid(&mut self.rng)).to_string())
    }

    /// A fresh id that joins `ids` of the world (when recording).
    fn fresh(&mut self, ids: fn(&mut World) -> &mut Vec<Uuid>) -> Value {
        let id = uuid(&mut self.rng);
        if self.record {
            ids(&mut self.world).push(id);
        }
        Value::from(id.to_string())
    }

    /// An attempt number: mostly the first.
    fn attempt(&mut self) -> Value {
        Value::from(match self.rng.random_range(0..10) {
            0..=6 => 1,
            7 | 8 => 2,
            _ => 3,
        })
    }

    /// `min_position` now and then, small enough to be in any log the fuzz builds.
    fn min_position(&mut self, body: &mut Map<String, Value>) {
        maybe(body, &mut self.rng, 0.1, "min_position", |r| int(r, 0, 20));
    }

    /// A valid body of command or query `name`.
    pub fn body(&mut self, kind: Kind, name: &str) -> Value {
        let mut body = match kind {
            Kind::Command => self.command(name),
            Kind::Query => self.query(name),
        };
        if kind == Kind::Command {
            self.meta(&mut body);
        }
        body
    }

    /// `command_id` (sometimes one sent before) and `expected_version`, now and then.
    fn meta(&mut self, body: &mut Value) {
        let Some(body) = body.as_object_mut() else { return };
        let rng = &mut self.rng;
        if rng.random_bool(0.5) {
            let reuse = rng.random_bool(0.1);
            let id = match self.world.command_ids.choose(rng) {
                Some(id) if reuse => *id,
                _ => {
                    let id = uuid(rng);
                    if self.record {
                        self.world.command_ids.push(id);
                    }
                    id
                }
            };
            body.insert("command_id".into(), id.to_string().into());
        }
        maybe(body, rng, 0.05, "expected_version", |r| int(r, 0, 5));
    }
}

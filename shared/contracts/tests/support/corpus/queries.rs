//! Valid bodies of every query.

use flexcore_contracts::queries;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::Rng;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::super::values::{int, label, timestamp, uuid};
use super::{maybe, Corpus, World};

impl Corpus {
    /// `<view>.list`: some of the filters the view has, a sort it has, a page, a cursor.
    fn list(&mut self, view: &str) -> Value {
        let Some((filters, sorts)) = queries::list_rules(view) else {
            return json!({});
        };
        let mut body = Map::new();
        for filter in filters {
            if !self.rng.random_bool(0.25) {
                continue;
            }
            let value = match *filter {
                "state" => (*["active", "paused", "archived", "pending", "running", "succeeded", "x"]
                    .choose(&mut self.rng)
                    .unwrap_or(&"active"))
                .into(),
                "name" => (*["p-*", "*", "p0", "ünï", ""].choose(&mut self.rng).unwrap_or(&"*")).into(),
                "kind" => (*["extractor", "loader", "transformer"]
                    .choose(&mut self.rng)
                    .unwrap_or(&"loader"))
                .into(),
                "owner" | "tag" => label(&mut self.rng).into(),
                "pipeline_id" => self.pick(|w| &w.pipelines),
                "aggregate_id" => self.pick(|w| &w.pipelines),
                // The start of an id (one of the world's, or any), 1 to 32 hex digits.
                "id_prefix" => {
                    let id = self.pick(|w| &w.pipelines);
                    let hex = id
                        .as_str()
                        .map_or_else(|| uuid(&mut self.rng).simple().to_string(), |s| s.replace('-', ""));
                    let digits = self.rng.random_range(1..=32);
                    hex[..digits].into()
                }
                "aggregate_type" => (*["pipeline", "run", "plugin", "schedule"]
                    .choose(&mut self.rng)
                    .unwrap_or(&"run"))
                .into(),
                "event_type" => (*["run.requested", "pipeline.created", "nope"]
                    .choose(&mut self.rng)
                    .unwrap_or(&"nope"))
                .into(),
                _ => timestamp(&mut self.rng).into(),
            };
            body.insert((*filter).into(), value);
        }
        let rng = &mut self.rng;
        let sort = *sorts.choose(rng).unwrap_or(&"time");
        if rng.random_bool(0.4) {
            body.insert("sort_by".into(), sort.into());
        }
        let order = if rng.random_bool(0.5) { "asc" } else { "desc" };
        if rng.random_bool(0.4) {
            body.insert("order".into(), order.into());
        }
        maybe(&mut body, rng, 0.4, "limit", |r| int(r, 1, 1000));
        if rng.random_bool(0.2) {
            body.insert("cursor".into(), cursor(rng, sort, order).into());
        }
        self.min_position(&mut body);
        Value::Object(body)
    }

    /// A valid body of query `name`.
    pub(super) fn query(&mut self, name: &str) -> Value {
        let (view, operation) = name.split_once('.').unwrap_or((name, ""));
        let mut body = Map::new();
        match (view, operation) {
            ("stats", "get") | ("projection", "list") => {}
            ("projection", "rebuild") => {
                let projection = *queries::PROJECTIONS.choose(&mut self.rng).unwrap_or(&"runs");
                body.insert("name".into(), projection.into());
            }
            (_, "get") | ("plugin", "stats") => {
                let ids: fn(&World) -> &Vec<Uuid> = match view {
                    "pipeline" => |w| &w.pipelines,
                    "run" => |w| &w.runs,
                    "schedule" => |w| &w.schedules,
                    _ => |w| &w.pipelines,
                };
                let id = if view == "plugin" {
                    self.plugin_id()
                } else {
                    self.pick(ids)
                };
                body.insert("id".into(), id);
            }
            (_, "list") => return self.list(view),
            _ => panic!("no corpus for query {name}: add one to support/corpus.rs"),
        }
        self.min_position(&mut body);
        Value::Object(body)
    }
}

/// A cursor of the form the projection service issues (hex of `sort␟value␟key`) for
/// `sort` and `order`, with a plausible or a forged value and key.
fn cursor(rng: &mut StdRng, sort: &str, order: &str) -> String {
    let token = format!("{}{}", &sort[..1], &order[..1]);
    let value = match rng.random_range(0..5) {
        0 => "2026-11-24 10:00:00.123+00".to_owned(),
        1 => "p-name".to_owned(),
        2 => "not a time".to_owned(),
        3 => String::new(),
        _ => "9999999999-01-01".to_owned(),
    };
    let key = match rng.random_range(0..3) {
        0 => uuid(rng).to_string(),
        1 => "42".to_owned(),
        _ => "key".to_owned(),
    };
    let raw = format!("{token}\u{1f}{value}\u{1f}{key}");
    raw.bytes().map(|b| format!("{b:02x}")).collect()
}

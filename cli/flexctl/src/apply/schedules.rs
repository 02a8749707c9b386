//! The schedules of `apply`: pairing the file's with the server's, and the commands that
//! make the server's what the file says.

use flexcore_contracts::model::ScheduleSpec;
use flexcore_contracts::views::ScheduleView;
use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::FieldChange;
use crate::api::Api;
use crate::pipeline::explain;
use crate::pipeline_file::{Loaded, ScheduleEntry};

/// What happens to one schedule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScheduleChange {
    /// `create`, `update`, `replace` (an update cannot unset `start_at`/`end_at`: deleted
    /// and created again), `delete`, `keep` (unlisted, kept) or `unchanged`.
    pub action: &'static str,
    /// The server's schedule (none for `create`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule_id: Option<Uuid>,
    /// Its position in the file (none for `delete` and `keep`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// Cron expression.
    pub cron: String,
    /// Time zone.
    pub timezone: String,
    /// The fields that change (`paused` included).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<FieldChange>,
}

/// Pairs the file's schedules with the server's (same spec first, then same cron and
/// time zone) and says what happens to each.
pub fn schedule_changes(
    file: &[ScheduleEntry],
    server: &[ScheduleView],
    keep_unlisted: bool,
) -> anyhow::Result<Vec<ScheduleChange>> {
    let specs: Vec<ScheduleSpec> = file.iter().map(ScheduleEntry::spec).collect::<Result<_, _>>()?;
    let mut taken = vec![false; server.len()];
    let mut matched: Vec<Option<usize>> = vec![None; file.len()];
    let same_key = |a: &ScheduleSpec, b: &ScheduleSpec| a.cron == b.cron && a.timezone == b.timezone;
    for pass in [true, false] {
        for (i, spec) in specs.iter().enumerate() {
            if matched[i].is_some() {
                continue;
            }
            let found = server
                .iter()
                .enumerate()
                .position(|(j, s)| !taken[j] && if pass { s.spec == *spec } else { same_key(&s.spec, spec) });
            if let Some(j) = found {
                taken[j] = true;
                matched[i] = Some(j);
            }
        }
    }
    let mut out = Vec::new();
    for (i, (entry, spec)) in file.iter().zip(&specs).enumerate() {
        let Some(j) = matched[i] else {
            out.push(ScheduleChange {
                action: "create",
                schedule_id: None,
                index: Some(i),
                cron: spec.cron.clone(),
                timezone: spec.timezone.clone(),
                changes: Vec::new(),
            });
            continue;
        };
        let current = &server[j];
        let (from, to) = (json!(current.spec), json!(spec));
        let mut changes = Vec::new();
        for key in [
            "cron",
            "timezone",
            "overlap",
            "catchup_window_seconds",
            "catchup_cap",
            "jitter_seconds",
            "start_at",
            "end_at",
        ] {
            if from.get(key) != to.get(key) {
                changes.push(FieldChange {
                    field: key.to_owned(),
                    from: from.get(key).cloned().unwrap_or(Value::Null),
                    to: to.get(key).cloned().unwrap_or(Value::Null),
                });
            }
        }
        // An update cannot take a bound away: such a schedule is made again.
        let unsets = changes.iter().any(|c| c.to.is_null());
        let paused = current.state == "paused";
        if paused != entry.paused {
            changes.push(FieldChange {
                field: "paused".to_owned(),
                from: json!(paused),
                to: json!(entry.paused),
            });
        }
        out.push(ScheduleChange {
            action: match (changes.is_empty(), unsets) {
                (true, _) => "unchanged",
                (false, true) => "replace",
                (false, false) => "update",
            },
            schedule_id: Some(current.schedule_id),
            index: Some(i),
            cron: spec.cron.clone(),
            timezone: spec.timezone.clone(),
            changes,
        });
    }
    for s in server.iter().zip(&taken).filter(|(_, taken)| !**taken).map(|(s, _)| s) {
        out.push(ScheduleChange {
            action: if keep_unlisted { "keep" } else { "delete" },
            schedule_id: Some(s.schedule_id),
            index: None,
            cron: s.spec.cron.clone(),
            timezone: s.spec.timezone.clone(),
            changes: Vec::new(),
        });
    }
    Ok(out)
}

/// Sends the commands of one schedule change (as dry runs when `dry_run`).
pub(super) async fn schedule_commands(
    api: &Api,
    loaded: &Loaded,
    pipeline_id: Uuid,
    change: &ScheduleChange,
    dry_run: bool,
) -> anyhow::Result<()> {
    let at = change.index.map(|i| format!("schedules[{i}]")).unwrap_or_default();
    let send = |name: &'static str, mut body: Value| {
        let at = at.clone();
        async move {
            if dry_run {
                body["dry_run"] = json!(true);
            }
            api.command(name, &body)
                .await
                .map(|_| ())
                .map_err(|e| explain(loaded, &at, e))
        }
    };
    let entry = change.index.and_then(|i| loaded.pipeline.schedules.get(i));
    let id = change.schedule_id;
    let create_body = || -> anyhow::Result<Value> {
        let mut body = serde_json::to_value(entry.ok_or_else(|| anyhow::anyhow!("no schedule to create"))?)?;
        body["pipeline_id"] = json!(pipeline_id);
        Ok(body)
    };
    match change.action {
        "create" => send("schedule.create", create_body()?).await,
        "delete" => send("schedule.delete", json!({"schedule_id": id})).await,
        "replace" => {
            // A dry run of the create would be checked against the schedule still there:
            // nothing about it conflicts, so both are checked independently.
            send("schedule.delete", json!({"schedule_id": id})).await?;
            send("schedule.create", create_body()?).await
        }
        "update" => {
            let mut body = json!({"schedule_id": id});
            let mut pause = None;
            for c in &change.changes {
                if c.field == "paused" {
                    pause = Some(c.to == json!(true));
                } else {
                    body[c.field.as_str()] = c.to.clone();
                }
            }
            if body.as_object().is_some_and(|b| b.len() > 1) {
                send("schedule.update", body).await?;
            }
            match pause {
                Some(true) => send("schedule.pause", json!({"schedule_id": id})).await,
                Some(false) => send("schedule.resume", json!({"schedule_id": id})).await,
                None => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn entry(value: Value) -> ScheduleEntry {
        serde_json::from_value(value).unwrap()
    }

    fn view(id: u128, spec: Value, state: &str) -> ScheduleView {
        serde_json::from_value(json!({
            "schedule_id": Uuid::from_u128(id), "pipeline_id": Uuid::nil(), "spec": spec, "state": state,
            "slots_skipped": 0, "slots_missed": 0, "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z", "aggregate_version": 1
        }))
        .unwrap()
    }

    fn actions(changes: &[ScheduleChange]) -> Vec<(&'static str, Option<Uuid>)> {
        changes.iter().map(|c| (c.action, c.schedule_id)).collect()
    }

    #[test]
    fn schedules_pair_by_spec_then_by_cron_and_zone() {
        let server = [
            view(1, json!({"cron": "0 * * * *"}), "active"),
            view(2, json!({"cron": "0 * * * *", "jitter_seconds": 5}), "active"),
            view(
                3,
                json!({"cron": "0 3 * * *", "start_at": "2026-01-01T00:00:00Z"}),
                "paused",
            ),
            view(4, json!({"cron": "0 4 * * *"}), "active"),
        ];
        let file = [
            // The same spec as schedule 2, listed first: it takes 2, not 1.
            entry(json!({"cron": "0 * * * *", "jitter_seconds": 5})),
            entry(json!({"cron": "0 * * * *", "jitter_seconds": 9})),
            // A bound taken away: replaced; and resumed.
            entry(json!({"cron": "0 3 * * *"})),
            entry(json!({"cron": "0 5 * * *", "timezone": "Europe/Berlin"})),
        ];
        let changes = schedule_changes(&file, &server, false).unwrap();
        let id = |n| Some(Uuid::from_u128(n));
        assert_eq!(
            actions(&changes),
            [
                ("unchanged", id(2)),
                ("update", id(1)),
                ("replace", id(3)),
                ("create", None),
                ("delete", id(4))
            ]
        );
        assert_eq!(changes[1].changes[0].field, "jitter_seconds");
        assert_eq!(
            (changes[1].changes[0].from.clone(), changes[1].changes[0].to.clone()),
            (json!(0), json!(9))
        );
        let fields: Vec<&str> = changes[2].changes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["start_at", "paused"]);
        assert_eq!(changes[3].timezone, "Europe/Berlin");
        let kept = schedule_changes(&file, &server, true).unwrap();
        assert_eq!(kept.last().map(|c| c.action), Some("keep"));
    }

    #[test]
    fn the_same_schedules_are_unchanged() {
        let server = [view(1, json!({"cron": "*/5 * * * *", "timezone": "UTC"}), "paused")];
        let file = [entry(json!({"cron": "*/5 * * * *", "paused": true}))];
        let changes = schedule_changes(&file, &server, false).unwrap();
        assert_eq!(actions(&changes), [("unchanged", Some(Uuid::from_u128(1)))]);
        assert!(changes[0].changes.is_empty());
    }
}

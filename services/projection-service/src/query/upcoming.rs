//! The next fires across every active schedule (`stats.get`'s `next_fires`), kept between
//! queries: each active schedule's calendar and next slot are loaded once and reloaded
//! only when the schedules read model changes (its row count or latest update: rows are
//! never removed, and every event on a schedule sets its `updated_at`); otherwise
//! a query advances the slots that have passed and reads the earliest. Computing every
//! schedule's next slot for each query would cost a cron evaluation per schedule.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use flexcore_contracts::lifecycle::ScheduleStatus;
use flexcore_contracts::model::ScheduleSpec;
use flexcore_contracts::views::NextFire;
use flexcore_contracts::ErrorBody;
use flexcore_cron::Calendar;
use sqlx::PgPool;
use tokio::sync::Mutex;
use uuid::Uuid;

use super::db_error;

/// Longest a cache is used without reloading it.
const MAX_AGE: std::time::Duration = std::time::Duration::from_secs(60);

/// What identifies one state of the schedules read model: its row count and latest update.
type Stamp = (i64, Option<DateTime<Utc>>);

/// The cache; one per service.
#[derive(Default)]
pub struct Upcoming {
    cache: Mutex<Option<Cache>>,
}

struct Cache {
    stamp: Stamp,
    /// When it was loaded: reloaded after [`MAX_AGE`] whatever the stamp says (an update
    /// recorded with an earlier time than the latest would not move the stamp).
    loaded: std::time::Instant,
    /// Each active schedule's calendar and pipeline.
    schedules: HashMap<Uuid, (Calendar, Uuid)>,
    /// Each active schedule's next slot, earliest first.
    fires: BTreeSet<(DateTime<Utc>, Uuid)>,
}

impl Cache {
    async fn load(pool: &PgPool, stamp: Stamp, now: DateTime<Utc>) -> Result<Self, ErrorBody> {
        let rows: Vec<(Uuid, Uuid, sqlx::types::Json<ScheduleSpec>)> =
            sqlx::query_as("SELECT schedule_id, pipeline_id, doc->'spec' FROM read.schedules WHERE state = $1")
                .bind(ScheduleStatus::Active.as_str())
                .fetch_all(pool)
                .await
                .map_err(db_error)?;
        let mut cache = Self {
            stamp,
            loaded: std::time::Instant::now(),
            schedules: HashMap::with_capacity(rows.len()),
            fires: BTreeSet::new(),
        };
        for (schedule, pipeline, spec) in rows {
            // A spec the read model holds was valid when the command service took it; one
            // that no longer parses (a zone this build lacks) has no next fire.
            let Ok(calendar) = Calendar::new(&spec.0) else { continue };
            if let Some(at) = calendar.next_after(now) {
                cache.fires.insert((at, schedule));
            }
            cache.schedules.insert(schedule, (calendar, pipeline));
        }
        Ok(cache)
    }

    /// Moves every slot at or before `now` to its schedule's next one.
    fn advance(&mut self, now: DateTime<Utc>) {
        while let Some(&(at, schedule)) = self.fires.first() {
            if at > now {
                break;
            }
            self.fires.pop_first();
            if let Some(next) = self.schedules.get(&schedule).and_then(|(c, _)| c.next_after(now)) {
                self.fires.insert((next, schedule));
            }
        }
    }
}

impl Upcoming {
    /// The first `limit` fires after `now`, earliest first, with their pipelines' names.
    pub async fn next(&self, pool: &PgPool, now: DateTime<Utc>, limit: usize) -> Result<Vec<NextFire>, ErrorBody> {
        // Two index-sized reads, one statement each: a statement that read both views
        // would lock them in the opposite order of a rebuild swapping them (a deadlock).
        let count: i64 = sqlx::query_scalar("SELECT coalesce(sum(count), 0)::bigint FROM read.schedules_counts")
            .fetch_one(pool)
            .await
            .map_err(db_error)?;
        let latest: Option<DateTime<Utc>> = sqlx::query_scalar("SELECT max(updated_at) FROM read.schedules")
            .fetch_one(pool)
            .await
            .map_err(db_error)?;
        let stamp: Stamp = (count, latest);
        let firsts: Vec<(DateTime<Utc>, Uuid, Uuid)> = {
            let mut cache = self.cache.lock().await;
            if cache
                .as_ref()
                .is_none_or(|c| c.stamp != stamp || c.loaded.elapsed() > MAX_AGE)
            {
                *cache = Some(Cache::load(pool, stamp, now).await?);
            }
            let Some(cache) = cache.as_mut() else {
                return Ok(Vec::new());
            };
            cache.advance(now);
            cache
                .fires
                .iter()
                .take(limit)
                .filter_map(|&(at, s)| Some((at, s, cache.schedules.get(&s)?.1)))
                .collect()
        };
        let pipelines: Vec<Uuid> = firsts.iter().map(|f| f.2).collect();
        let names: HashMap<Uuid, String> =
            sqlx::query_as("SELECT pipeline_id, name FROM read.pipelines WHERE pipeline_id = ANY($1)")
                .bind(&pipelines)
                .fetch_all(pool)
                .await
                .map_err(db_error)?
                .into_iter()
                .collect();
        Ok(firsts
            .into_iter()
            .map(|(at, schedule_id, pipeline_id)| NextFire {
                at,
                schedule_id,
                pipeline_id,
                pipeline_name: names.get(&pipeline_id).cloned(),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(cron: &str) -> ScheduleSpec {
        serde_json::from_value(serde_json::json!({"cron": cron, "timezone": "UTC"})).unwrap()
    }

    #[test]
    fn advancing_moves_passed_slots_to_their_next_and_keeps_order() {
        let now: DateTime<Utc> = "2026-01-01T00:00:30Z".parse().unwrap();
        let (hourly, minutely) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let mut cache = Cache {
            stamp: (2, None),
            loaded: std::time::Instant::now(),
            schedules: HashMap::new(),
            fires: BTreeSet::new(),
        };
        for (id, cron) in [(hourly, "0 * * * *"), (minutely, "* * * * *")] {
            let calendar = Calendar::new(&spec(cron)).unwrap();
            cache.fires.insert((calendar.next_after(now).unwrap(), id));
            cache.schedules.insert(id, (calendar, Uuid::nil()));
        }
        let order = |c: &Cache| c.fires.iter().map(|f| (f.0.to_rfc3339(), f.1)).collect::<Vec<_>>();
        assert_eq!(
            order(&cache),
            [
                ("2026-01-01T00:01:00+00:00".to_owned(), minutely),
                ("2026-01-01T01:00:00+00:00".to_owned(), hourly)
            ]
        );
        cache.advance("2026-01-01T01:00:00Z".parse().unwrap());
        assert_eq!(
            order(&cache),
            [
                ("2026-01-01T01:01:00+00:00".to_owned(), minutely),
                ("2026-01-01T02:00:00+00:00".to_owned(), hourly)
            ]
        );
    }
}

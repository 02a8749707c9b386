//! When a schedule fires: cron slots in an IANA time zone, with one explicit rule for
//! daylight-saving transitions, start/end bounds and deterministic jitter. Pure functions:
//! the command service validates with them, the scheduler fires by them, the projection
//! shows the next fire and `flexctl schedule backfill` enumerates past slots by them, so all
//! four agree on every slot.
//!
//! # The DST rule
//! The cron expression is matched against local wall-clock time in the schedule's zone.
//! - A local time that does not exist (the hour skipped when clocks spring forward) fires
//!   once, at the transition instant (02:30 Europe/Berlin on the spring-forward day fires
//!   at 03:00 CEST). Several such slots collapse into that one instant.
//! - A local time that exists twice (the hour repeated when clocks fall back) fires once,
//!   at its first occurrence; the repeated hour fires nothing a second time.
//!
//! # Layout
//!
//! - this file — [`parse_cron`], [`parse_zone`], [`Calendar`] (slots under the DST rule),
//!   [`jitter`], [`CalendarError`].
//! - `fields` — which field of a refused expression is at fault and what it allows
//!   (`minute field "61" is out of range 0–59`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds};
use croner::Cron;
use flexcore_contracts::model::ScheduleSpec;
use uuid::Uuid;

mod fields;

/// Why a schedule's timing is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalendarError {
    /// The cron expression does not parse.
    #[error("cron {expr:?} is invalid: {why}")]
    Cron {
        /// The expression.
        expr: String,
        /// What is wrong.
        why: String,
    },
    /// The time zone is not an IANA name.
    #[error("unknown time zone {0:?}: use an IANA name like Europe/Berlin")]
    Zone(String),
}

impl CalendarError {
    /// The spec field at fault (`cron` or `timezone`).
    pub fn field(&self) -> &'static str {
        match self {
            Self::Cron { .. } => "cron",
            Self::Zone(_) => "timezone",
        }
    }
}

/// Parses a cron expression of exactly 5 fields (minute precision) or 6 (a leading
/// seconds field).
pub fn parse_cron(expr: &str) -> Result<Cron, CalendarError> {
    let invalid = |why: String| CalendarError::Cron {
        expr: expr.to_owned(),
        why,
    };
    let fields = expr.split_whitespace().count();
    if fields != 5 && fields != 6 {
        return Err(invalid(format!(
            "it has {fields} field(s); use 5 (minute hour day-of-month month day-of-week) or 6 (with a leading seconds field)"
        )));
    }
    CronParser::builder()
        .seconds(Seconds::Optional)
        .build()
        .parse(expr)
        .map_err(|e| invalid(fields::explain(expr, &e.to_string())))
}

/// Parses an IANA time zone name.
pub fn parse_zone(name: &str) -> Result<Tz, CalendarError> {
    name.parse::<Tz>().map_err(|_| CalendarError::Zone(name.to_owned()))
}

/// Most cron matches examined for one slot (a per-second cron inside a repeated hour
/// needs 3,600); beyond it the schedule is treated as having no further slot.
const MAX_STEPS: usize = 100_000;

/// The parsed form of `expr`, shared by every calendar of the same expression.
///
/// A parsed [`Cron`] is about 5 kB (croner keeps a byte per possible year, 1 to 5000): a
/// scheduler with 10,000 schedules held 50 MB of them, mostly the same few expressions
/// (`0 * * * *`). Calendars now share one per distinct expression. The table keeps the
/// ones no calendar holds too (a query computing next fires parses each row's expression
/// once, not per row) until it has grown to twice its size after the last sweep, at least
/// [`KEPT`] entries; a sweep drops every entry no calendar holds.
fn shared_cron(expr: &str) -> Result<Arc<Cron>, CalendarError> {
    struct Table {
        crons: HashMap<Box<str>, Arc<Cron>>,
        /// Sweep when the table exceeds this size.
        sweep_above: usize,
    }
    static TABLE: OnceLock<Mutex<Table>> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        Mutex::new(Table {
            crons: HashMap::new(),
            sweep_above: KEPT,
        })
    });
    // A panic elsewhere while the lock was held leaves the table consistent (every entry
    // is a whole insert), so a poisoned lock is taken as it is.
    let lock = || table.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(cron) = lock().crons.get(expr) {
        return Ok(cron.clone());
    }
    // Parsed outside the lock; a parse another thread inserted meanwhile wins.
    let parsed = Arc::new(parse_cron(expr)?);
    let mut table = lock();
    let cron = table.crons.entry(expr.into()).or_insert(parsed).clone();
    if table.crons.len() > table.sweep_above {
        table.crons.retain(|_, cron| Arc::strong_count(cron) > 1);
        table.sweep_above = (table.crons.len() * 2).max(KEPT);
    }
    Ok(cron)
}

/// Entries the table of parsed crons may reach before its first sweep. After a sweep it
/// may grow to twice what calendars hold, so the parses no calendar holds number at most
/// about the larger of this and the number held (5 kB each).
const KEPT: usize = 256;

/// The slots of one schedule.
#[derive(Debug, Clone)]
pub struct Calendar {
    /// Shared with every calendar of the same expression ([`shared_cron`]).
    cron: Arc<Cron>,
    tz: Tz,
    start_at: Option<DateTime<Utc>>,
    end_at: Option<DateTime<Utc>>,
}

impl Calendar {
    /// The calendar of a schedule spec.
    pub fn new(spec: &ScheduleSpec) -> Result<Self, CalendarError> {
        Ok(Self {
            cron: shared_cron(&spec.cron)?,
            tz: parse_zone(&spec.timezone)?,
            start_at: spec.start_at,
            end_at: spec.end_at,
        })
    }

    /// The first slot strictly after `after`, within the bounds (`start_at` inclusive,
    /// `end_at` inclusive); `None` when the schedule has ended.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let after = match self.start_at {
            Some(start) if after < start => start - Duration::nanoseconds(1),
            _ => after,
        };
        // Slots are whole seconds: strictly after `after` is strictly after its second.
        let after = after - Duration::nanoseconds(i64::from(after.timestamp_subsec_nanos()));
        let mut from = Utc.from_utc_datetime(&after.with_timezone(&self.tz).naive_local());
        for _ in 0..MAX_STEPS {
            let local = self.cron.find_next_occurrence(&from, false).ok()?.naive_utc();
            let slot = self.instant(local)?;
            if slot > after {
                return match self.end_at {
                    Some(end) if slot > end => None,
                    _ => Some(slot),
                };
            }
            from = Utc.from_utc_datetime(&local);
        }
        None
    }

    /// The slots in `(after, until]`, oldest first, at most `limit` of them.
    pub fn slots_between(&self, after: DateTime<Utc>, until: DateTime<Utc>, limit: usize) -> Vec<DateTime<Utc>> {
        let mut slots = Vec::new();
        let mut cursor = after;
        while slots.len() < limit {
            match self.next_after(cursor) {
                Some(slot) if slot <= until => {
                    slots.push(slot);
                    cursor = slot;
                }
                _ => break,
            }
        }
        slots
    }

    /// The instant of local wall-clock time `local` under the DST rule.
    fn instant(&self, local: NaiveDateTime) -> Option<DateTime<Utc>> {
        match self.tz.from_local_datetime(&local) {
            LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
            LocalResult::Ambiguous(first, _) => Some(first.with_timezone(&Utc)),
            LocalResult::None => self.transition_after_gap(local),
        }
    }

    /// The instant clocks jumped over `local` (which does not exist): found by bisecting
    /// between a day before (the old offset) and `local` read with the old offset (already
    /// past the jump).
    fn transition_after_gap(&self, local: NaiveDateTime) -> Option<DateTime<Utc>> {
        let offset_at = |t: DateTime<Utc>| self.tz.offset_from_utc_datetime(&t.naive_utc()).fix();
        let before = Utc.from_utc_datetime(&(local - Duration::days(1)));
        let old = offset_at(before);
        let (mut lo, mut hi) = (
            before.timestamp(),
            local.and_utc().timestamp() - i64::from(old.local_minus_utc()),
        );
        let at = |secs: i64| Utc.timestamp_opt(secs, 0).single();
        if offset_at(at(hi)?) == old {
            return None;
        }
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if offset_at(at(mid)?) == old {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        at(hi)
    }
}

/// The delay of slot `slot` of schedule `schedule_id` within `[0, jitter_seconds]`,
/// to the millisecond: derived from the pair, so every replica fires it at the same moment.
pub fn jitter(schedule_id: Uuid, slot: DateTime<Utc>, jitter_seconds: u64) -> Duration {
    if jitter_seconds == 0 {
        return Duration::zero();
    }
    let key = Uuid::new_v5(&schedule_id, &slot.timestamp_millis().to_be_bytes());
    let range = jitter_seconds.saturating_mul(1000).saturating_add(1);
    let millis = (key.as_u128() % u128::from(range)) as i64;
    Duration::milliseconds(millis)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn spec(cron: &str, tz: &str) -> ScheduleSpec {
        ScheduleSpec {
            cron: cron.to_owned(),
            timezone: tz.to_owned(),
            overlap: Default::default(),
            catchup_window_seconds: 3600,
            catchup_cap: 1,
            jitter_seconds: 0,
            start_at: None,
            end_at: None,
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn daily(cal: &Calendar, from: &str, to: &str) -> Vec<String> {
        cal.slots_between(at(from), at(to), 100)
            .into_iter()
            .map(|t| t.to_rfc3339())
            .collect()
    }

    #[test]
    fn calendars_of_one_expression_share_its_parsed_form_until_none_uses_it() {
        // An expression no other test uses (the table is the process's).
        let expr = "7 3 * * 1";
        let a = Calendar::new(&spec(expr, "UTC")).unwrap();
        let b = Calendar::new(&spec(expr, "Europe/Berlin")).unwrap();
        assert!(Arc::ptr_eq(&a.cron, &b.cron), "one parsed cron per expression");
        let other = Calendar::new(&spec("8 3 * * 1", "UTC")).unwrap();
        assert!(!Arc::ptr_eq(&a.cron, &other.cron));
        // Shared, the calendars still compute their own slots (their zones differ).
        assert_eq!(
            daily(&a, "2027-01-04T00:00:00Z", "2027-01-05T00:00:00Z"),
            ["2027-01-04T03:07:00+00:00"]
        );
        assert_eq!(
            daily(&b, "2027-01-04T00:00:00Z", "2027-01-05T00:00:00Z"),
            ["2027-01-04T02:07:00+00:00"]
        );
        // Once no calendar holds it, the table keeps it until a sweep, which frees it.
        let weak = Arc::downgrade(&a.cron);
        drop((a, b));
        assert!(weak.upgrade().is_some(), "kept for the next calendar of the expression");
        let many: Vec<Calendar> = (0..2 * KEPT + 1)
            .map(|i| Calendar::new(&spec(&format!("{} {} * * *", i % 60, i / 60), "UTC")).unwrap())
            .collect();
        drop(many);
        assert!(
            weak.upgrade().is_none(),
            "the parsed cron outlived its calendars past a sweep"
        );
        // Parsed anew when next needed.
        let again = Calendar::new(&spec(expr, "UTC")).unwrap();
        assert_eq!(
            daily(&again, "2027-01-04T00:00:00Z", "2027-01-05T00:00:00Z"),
            ["2027-01-04T03:07:00+00:00"]
        );
        // An invalid expression is refused as before (nothing is shared for it).
        assert!(matches!(
            Calendar::new(&spec("61 * * * *", "UTC")),
            Err(CalendarError::Cron { .. })
        ));
    }

    #[test]
    fn spring_forward_fires_once_at_the_transition() {
        let cal = Calendar::new(&spec("30 2 * * *", "Europe/Berlin")).unwrap();
        assert_eq!(
            daily(&cal, "2027-03-27T00:00:00Z", "2027-03-30T00:00:00Z"),
            [
                "2027-03-27T01:30:00+00:00", // 02:30 CET
                "2027-03-28T01:00:00+00:00", // 02:30 does not exist: 03:00 CEST, the jump
                "2027-03-29T00:30:00+00:00", // 02:30 CEST
            ]
        );
    }

    #[test]
    fn fall_back_fires_once_in_the_first_pass() {
        let cal = Calendar::new(&spec("30 2 * * *", "Europe/Berlin")).unwrap();
        assert_eq!(
            daily(&cal, "2027-10-30T00:00:00Z", "2027-11-02T00:00:00Z"),
            [
                "2027-10-30T00:30:00+00:00", // 02:30 CEST
                "2027-10-31T00:30:00+00:00", // first 02:30 (CEST); the CET one does not fire
                "2027-11-01T01:30:00+00:00", // 02:30 CET
            ]
        );
        // Asked from inside the repeated hour's second pass, the next slot is the next day.
        assert_eq!(
            cal.next_after(at("2027-10-31T01:10:00Z")).map(|t| t.to_rfc3339()),
            Some("2027-11-01T01:30:00+00:00".to_owned())
        );
    }

    #[test]
    fn slots_inside_the_gap_collapse_into_one() {
        let cal = Calendar::new(&spec("*/30 * * * *", "Europe/Berlin")).unwrap();
        // 01:30 CET, then 02:00, 02:30 (skipped) and 03:00 CEST are the same instant.
        assert_eq!(
            daily(&cal, "2027-03-28T00:15:00Z", "2027-03-28T01:45:00Z"),
            [
                "2027-03-28T00:30:00+00:00",
                "2027-03-28T01:00:00+00:00",
                "2027-03-28T01:30:00+00:00"
            ]
        );
    }

    #[test]
    fn every_minute_through_the_repeated_hour_fires_sixty_times_not_120() {
        let cal = Calendar::new(&spec("* * * * *", "Europe/Berlin")).unwrap();
        // 00:00Z..02:00Z on fall-back day covers local 02:00 CEST .. 02:00 CET twice over.
        let slots = cal.slots_between(at("2027-10-31T00:00:00Z"), at("2027-10-31T02:00:00Z"), 1000);
        // 00:01Z..00:59Z (first pass), then 01:00Z is the second 02:00, skipped, so the
        // next is 03:00 CET = 02:00Z.
        assert_eq!(slots.len(), 60);
        assert_eq!(
            slots.last().map(|t| t.to_rfc3339()),
            Some("2027-10-31T02:00:00+00:00".to_owned())
        );
    }

    #[test]
    fn six_fields_fire_on_seconds_and_bounds_hold() {
        let mut s = spec("*/10 * * * * *", "UTC");
        s.start_at = Some(at("2026-11-24T10:00:05Z"));
        s.end_at = Some(at("2026-11-24T10:00:40Z"));
        let cal = Calendar::new(&s).unwrap();
        let slots = cal.slots_between(at("2026-11-24T09:00:00Z"), at("2026-11-24T11:00:00Z"), 100);
        let secs: Vec<u32> = slots.iter().map(chrono::Timelike::second).collect();
        assert_eq!(secs, [10, 20, 30, 40]);
        assert_eq!(cal.next_after(at("2026-11-24T10:00:40Z")), None);
        // start_at itself is a slot when it matches.
        s.start_at = Some(at("2026-11-24T10:00:10Z"));
        let cal = Calendar::new(&s).unwrap();
        assert_eq!(
            cal.next_after(at("2026-11-24T09:00:00Z")),
            Some(at("2026-11-24T10:00:10Z"))
        );
    }

    #[test]
    fn bad_specs_name_the_field() {
        let e = Calendar::new(&spec("61 * * * *", "UTC")).unwrap_err();
        assert_eq!(e.field(), "cron");
        assert_eq!(
            e.to_string(),
            r#"cron "61 * * * *" is invalid: minute field "61" is out of range 0–59"#
        );
        let e = Calendar::new(&spec("* * * *", "UTC")).unwrap_err();
        assert!(e.to_string().contains("4 field(s)"), "{e}");
        let e = Calendar::new(&spec("* * * * *", "Mars/Olympus")).unwrap_err();
        assert_eq!(e.field(), "timezone");
    }

    #[test]
    fn jitter_is_deterministic_and_bounded() {
        let id = Uuid::from_u128(7);
        let slot = at("2026-11-24T10:00:00Z");
        assert_eq!(jitter(id, slot, 0), Duration::zero());
        let j = jitter(id, slot, 30);
        assert_eq!(j, jitter(id, slot, 30));
        assert!(j >= Duration::zero() && j <= Duration::seconds(30));
        let distinct: std::collections::HashSet<i64> = (0..50)
            .map(|m| jitter(id, slot + Duration::minutes(m), 30).num_milliseconds())
            .collect();
        assert!(distinct.len() > 40, "jitter barely varies: {distinct:?}");
    }
}

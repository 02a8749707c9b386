//! `deploy/observability/`: the Grafana dashboard and the Prometheus alert rules parse,
//! cover what operators need, and query only metrics the services export (the names in
//! `shared/service/src/metrics/groups.rs`, the `process_*` metrics, and `up`).
//! serde_yaml reads the dashboard too (JSON is YAML).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_yaml::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/observability")
}

fn load(name: &str) -> Value {
    let path = dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The metric families the services export.
const EXPORTED: &[&str] = &[
    "flexcore_commands_processed_total",
    "flexcore_command_duration_seconds",
    "flexcore_command_cache_checks_total",
    "flexcore_events_appended_total",
    "flexcore_relay_lag_seconds",
    "flexcore_projection_lag_events",
    "flexcore_queries_executed_total",
    "flexcore_list_cache_lookups_total",
    "flexcore_plugin_executions_total",
    "flexcore_run_records_total",
    "flexcore_runner_slots_busy",
    "flexcore_runner_slots",
    "flexcore_schedule_fire_lag_seconds",
];
/// Of those, the histograms (queried through `_bucket`, `_sum`, `_count`).
const HISTOGRAMS: &[&str] = &[
    "flexcore_command_duration_seconds",
    "flexcore_schedule_fire_lag_seconds",
];

fn known(name: &str) -> bool {
    EXPORTED.contains(&name)
        || name.starts_with("process_")
        || name == "up"
        || HISTOGRAMS.iter().any(|h| {
            name.strip_prefix(h)
                .is_some_and(|suffix| ["_bucket", "_sum", "_count"].contains(&suffix))
        })
}

/// Words of PromQL that are not metric names even when no `(` follows them.
const KEYWORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "group",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
];

/// The metric names a PromQL expression selects: identifiers outside label matchers
/// (`{…}`), range selectors (`[…]`), strings and grouping lists, that are neither
/// keywords nor function calls.
fn metric_names(expr: &str) -> Vec<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    let skip_to = |from: usize, close: char| -> usize {
        let mut j = from + 1;
        let mut quoted = false;
        while j < chars.len() {
            match chars[j] {
                '\\' if quoted => j += 1,
                '"' => quoted = !quoted,
                c if c == close && !quoted => return j + 1,
                _ => {}
            }
            j += 1;
        }
        j
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '{' {
            i = skip_to(i, '}');
        } else if c == '[' {
            i = skip_to(i, ']');
        } else if c == '"' {
            i = skip_to(i, '"');
        } else if c.is_ascii_digit() {
            // Numbers, including 1e-3 and durations.
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().position(|c| !c.is_whitespace()).map(|p| i + p);
            let opens = next.is_some_and(|n| chars[n] == '(');
            if KEYWORDS.contains(&word.as_str()) {
                if opens && ["by", "without", "on", "ignoring", "group_left", "group_right"].contains(&word.as_str()) {
                    i = skip_to(next.unwrap_or(i), ')');
                }
            } else if !opens {
                names.push(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// Every `expr` anywhere under `value`.
fn exprs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Mapping(map) => {
            for (key, value) in map {
                match (key.as_str(), value.as_str()) {
                    (Some("expr"), Some(expr)) => out.push(expr.to_owned()),
                    _ => exprs(value, out),
                }
            }
        }
        Value::Sequence(items) => items.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

fn referenced(value: &Value) -> BTreeSet<String> {
    let mut all = Vec::new();
    exprs(value, &mut all);
    assert!(!all.is_empty(), "no expr found");
    let mut names = BTreeSet::new();
    for expr in &all {
        let found = metric_names(expr);
        assert!(!found.is_empty(), "no metric in {expr:?}");
        for name in found {
            assert!(known(&name), "{name:?} (in {expr:?}) is not a metric FlexCore exports");
            names.insert(name);
        }
    }
    names
}

#[test]
fn the_parser_finds_metric_names_and_only_them() {
    let expr = r#"histogram_quantile(0.95, sum by (le, command_type) (rate(flexcore_command_duration_seconds_bucket{a="x}y"}[5m]))) > 0.25
        or sum without (instance) (up{job=~"flexcore-.*"}) / ignoring (x) group_left process_open_fds offset 5m > 1e-3"#;
    assert_eq!(
        metric_names(expr),
        ["flexcore_command_duration_seconds_bucket", "up", "process_open_fds"]
    );
}

#[test]
fn the_dashboard_has_the_panels_operators_need_on_exported_metrics() {
    let dashboard = load("grafana-dashboard.json");
    assert!(dashboard["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(dashboard["uid"].as_str().is_some_and(|u| !u.is_empty()));
    assert!(dashboard["schemaVersion"].as_u64().is_some());
    let panels = dashboard["panels"].as_sequence().expect("panels");
    let mut ids = BTreeSet::new();
    let mut titles = Vec::new();
    for panel in panels {
        assert!(
            ids.insert(panel["id"].as_u64().expect("panel id")),
            "duplicate id: {panel:?}"
        );
        for key in ["x", "y", "w", "h"] {
            assert!(panel["gridPos"][key].as_u64().is_some(), "gridPos.{key}: {panel:?}");
        }
        let title = panel["title"].as_str().expect("panel title");
        titles.push(title.to_owned());
        if panel["type"] != "row" {
            let targets = panel["targets"].as_sequence().expect("targets");
            assert!(!targets.is_empty(), "{title}: no query");
            for target in targets {
                assert!(target["refId"].as_str().is_some(), "{title}: refId");
            }
        }
    }
    for wanted in [
        "Command rate",
        "Command error rate",
        "Command latency p95",
        "Projection lag",
        "Failed runs",
        "Runner saturation",
        "Schedule fire lag p99",
        "Process memory",
    ] {
        assert!(titles.iter().any(|t| t == wanted), "no panel {wanted:?} in {titles:?}");
    }
    let names = referenced(&dashboard);
    for wanted in [
        "flexcore_commands_processed_total",
        "flexcore_command_duration_seconds_bucket",
        "flexcore_projection_lag_events",
        "flexcore_runner_slots_busy",
        "flexcore_runner_slots",
        "flexcore_schedule_fire_lag_seconds_bucket",
        "process_resident_memory_bytes",
    ] {
        assert!(
            names.contains(wanted),
            "the dashboard does not query {wanted}: {names:?}"
        );
    }
}

#[test]
fn the_alert_rules_cover_errors_latency_lag_failures_saturation_and_targets() {
    let rules = load("prometheus-alerts.yaml");
    assert_eq!(rules["kind"], "PrometheusRule");
    let groups = rules["spec"]["groups"].as_sequence().expect("spec.groups");
    let mut alerts = Vec::new();
    for group in groups {
        assert!(group["name"].as_str().is_some(), "group name: {group:?}");
        for rule in group["rules"].as_sequence().expect("rules") {
            let alert = rule["alert"].as_str().expect("alert name");
            assert!(rule["expr"].as_str().is_some(), "{alert}: expr");
            assert!(rule["labels"]["severity"].as_str().is_some(), "{alert}: severity");
            assert!(rule["annotations"]["summary"].as_str().is_some(), "{alert}: summary");
            alerts.push((alert.to_owned(), rule.clone()));
        }
    }
    let names = referenced(&rules);
    for wanted in [
        "flexcore_commands_processed_total",
        "flexcore_command_duration_seconds_bucket",
        "flexcore_projection_lag_events",
        "flexcore_runner_slots_busy",
        "flexcore_runner_slots",
        "flexcore_schedule_fire_lag_seconds_bucket",
        "up",
    ] {
        assert!(names.contains(wanted), "no rule queries {wanted}: {names:?}");
    }
    let rule = |name: &str| {
        alerts
            .iter()
            .find(|(alert, _)| alert == name)
            .map(|(_, rule)| rule.clone())
            .unwrap_or_else(|| panic!("no alert {name}"))
    };
    let saturation = rule("FlexCoreRunnerSaturated");
    assert_eq!(saturation["for"], "10m");
    assert!(saturation["expr"].as_str().unwrap().contains("> 0.9"));
    assert!(rule("FlexCoreCommandLatencyHigh")["expr"]
        .as_str()
        .unwrap()
        .contains("> 0.25"));
    assert!(rule("FlexCoreScheduleFireLagHigh")["expr"]
        .as_str()
        .unwrap()
        .contains("> 5"));
    for name in [
        "FlexCoreCommandErrorRateHigh",
        "FlexCoreProjectionLagging",
        "FlexCoreRunsFailing",
        "FlexCoreTargetDown",
    ] {
        rule(name);
    }
}

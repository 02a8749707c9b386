use std::time::Duration;

use flexcore_config::Settings;

use crate::{config_dir, vars};

#[test]
fn an_unknown_yaml_key_is_an_error_naming_it() {
    let dir = config_dir(&[("base.yaml", "database:\n  max_conections: 3\n")]);
    let err = Settings::load_with(Some(dir.path()), None, vars(&[])).unwrap_err();
    assert!(err.to_string().contains("max_conections"), "{err}");
}

#[test]
fn an_unknown_section_is_an_error_naming_it() {
    let dir = config_dir(&[("base.yaml", "databse:\n  url: x\n")]);
    let err = Settings::load_with(Some(dir.path()), None, vars(&[])).unwrap_err();
    assert!(err.to_string().contains("databse"), "{err}");
}

#[test]
fn an_unknown_variable_is_an_error_naming_it() {
    let err = Settings::load_with(None, None, vars(&[("FLEXCORE__NATS__URLS", "x")])).unwrap_err();
    assert!(err.to_string().contains("urls"), "{err}");
}

#[test]
fn a_badly_typed_value_is_an_error() {
    let err = Settings::load_with(None, None, vars(&[("FLEXCORE__COMMAND__WRITERS", "many")])).unwrap_err();
    assert!(err.to_string().contains("writers"), "{err}");
}

#[test]
fn an_unknown_log_format_is_an_error() {
    let dir = config_dir(&[("base.yaml", "telemetry:\n  log_format: xml\n")]);
    assert!(Settings::load_with(Some(dir.path()), None, vars(&[])).is_err());
}

#[test]
fn an_environment_name_must_be_a_plain_file_name() {
    let dir = config_dir(&[("base.yaml", "{}\n")]);
    assert!(Settings::load_with(Some(dir.path()), Some("../etc/x"), vars(&[])).is_err());
}

#[test]
fn a_sample_ratio_is_read_from_files_and_variables_and_must_be_a_ratio() {
    let loaded = Settings::load_with(None, None, vars(&[("FLEXCORE__TELEMETRY__TRACE_SAMPLE_RATIO", "0.25")])).unwrap();
    assert_eq!(loaded.telemetry.trace_sample_ratio.get(), 0.25);
    let dir = config_dir(&[("base.yaml", "telemetry:\n  trace_sample_ratio: 0\n")]);
    let loaded = Settings::load_with(Some(dir.path()), None, vars(&[])).unwrap();
    assert_eq!(loaded.telemetry.trace_sample_ratio.get(), 0.0);
    for bad in ["1.5", "-0.1", "NaN", "half"] {
        let err =
            Settings::load_with(None, None, vars(&[("FLEXCORE__TELEMETRY__TRACE_SAMPLE_RATIO", bad)])).unwrap_err();
        assert!(err.to_string().contains("trace_sample_ratio"), "{bad}: {err}");
    }
}

#[test]
fn a_batch_stays_within_the_subtransaction_cache_and_writers_within_bounds() {
    let loaded = Settings::load_with(None, None, vars(&[("FLEXCORE__COMMAND__BATCH_MAX_COMMANDS", "64")])).unwrap();
    assert_eq!(loaded.command.batch_max_commands, 64);
    for (var, bad, field) in [
        ("FLEXCORE__COMMAND__BATCH_MAX_COMMANDS", "65", "batch_max_commands"),
        ("FLEXCORE__COMMAND__BATCH_MAX_COMMANDS", "0", "batch_max_commands"),
        ("FLEXCORE__COMMAND__WRITERS", "0", "writers"),
    ] {
        let err = Settings::load_with(None, None, vars(&[(var, bad)]))
            .unwrap_err()
            .to_string();
        assert!(err.contains(field) && err.contains("outside 1–"), "{var}={bad}: {err}");
    }
    let dir = config_dir(&[("base.yaml", "command:\n  batch_max_commands: 100\n")]);
    let err = Settings::load_with(Some(dir.path()), None, vars(&[]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("subtransaction"), "{err}");
}

#[test]
fn the_batch_linger_is_read_as_a_duration_and_bounded() {
    let default = Settings::load_with(None, None, vars(&[])).unwrap();
    assert_eq!(default.command.batch_linger, Duration::from_millis(1));
    let finer = Settings::load_with(None, None, vars(&[("FLEXCORE__COMMAND__BATCH_LINGER_MS", "500us")])).unwrap();
    assert_eq!(finer.command.batch_linger, Duration::from_micros(500));
    let off = Settings::load_with(None, None, vars(&[("FLEXCORE__COMMAND__BATCH_LINGER_MS", "0")])).unwrap();
    assert_eq!(off.command.batch_linger, Duration::ZERO);
    let err = Settings::load_with(None, None, vars(&[("FLEXCORE__COMMAND__BATCH_LINGER_MS", "101")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("batch_linger_ms") && err.contains("over 100ms"), "{err}");
}

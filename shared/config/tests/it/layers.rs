use flexcore_config::{find_config_dir, LogFormat, Secret, Settings};

use crate::{config_dir, repo_config_dir, vars};

#[test]
fn defaults_equal_base_yaml() {
    let loaded = Settings::load_with(Some(&repo_config_dir()), None, vars(&[])).unwrap();
    assert_eq!(loaded, Settings::default());
}

#[test]
fn without_a_config_dir_the_defaults_apply() {
    let loaded = Settings::load_with(None, Some("prod"), vars(&[])).unwrap();
    assert_eq!(loaded, Settings::default());
}

#[test]
fn variables_override_files() {
    let dir = config_dir(&[("base.yaml", "command:\n  writers: 2\n")]);
    let loaded = Settings::load_with(
        Some(dir.path()),
        None,
        vars(&[
            ("FLEXCORE__DATABASE__URL", "postgres://u:pw@db:5432/x"),
            ("FLEXCORE__DATABASE__MAX_CONNECTIONS", "3"),
            ("FLEXCORE__COMMAND__WRITERS", "8"),
            ("FLEXCORE__RELAY__ENABLED", "false"),
            ("FLEXCORE__RELAY__BATCH_SIZE", "-1"),
            ("FLEXCORE__TELEMETRY__LOG_FORMAT", "json"),
            ("FLEXCORE__TELEMETRY__OTLP_ENDPOINT", "http://collector:4317"),
            ("FLEXCORE__ADMIN__LISTEN", "0.0.0.0:9090"),
            // Empty means unset: the default stays.
            ("FLEXCORE__TELEMETRY__SERVICE_INSTANCE", ""),
            // Not ours: no double underscore after the prefix.
            ("FLEXCORE_TEST_DATABASE_URL", "ignored"),
            ("PATH", "ignored"),
        ]),
    )
    .unwrap();
    assert_eq!(loaded.database.url.expose(), "postgres://u:pw@db:5432/x");
    assert_eq!(loaded.database.max_connections, 3);
    assert_eq!(loaded.command.writers, 8);
    assert!(!loaded.relay.enabled);
    assert_eq!(loaded.relay.batch_size, -1);
    assert_eq!(loaded.telemetry.log_format, LogFormat::Json);
    assert_eq!(loaded.telemetry.otlp_endpoint.as_deref(), Some("http://collector:4317"));
    assert_eq!(loaded.telemetry.service_instance, None);
    assert_eq!(loaded.admin.listen, "0.0.0.0:9090");
    assert!(loaded.admin.enabled());
    // Untouched keys keep their defaults.
    assert_eq!(loaded.command.max_in_flight, 4096);
    assert_eq!(loaded.nats, Settings::default().nats);
    // No admin server unless configured.
    assert!(!Settings::default().admin.enabled());
}

#[test]
fn the_environment_file_overrides_base() {
    let dir = config_dir(&[
        ("base.yaml", "nats:\n  url: nats://base:4222\n  connect_timeout_ms: 7\n"),
        ("staging.yaml", "nats:\n  url: nats://staging:4222\n"),
    ]);
    let loaded = Settings::load_with(Some(dir.path()), Some("staging"), vars(&[])).unwrap();
    assert_eq!(loaded.nats.url, "nats://staging:4222");
    assert_eq!(loaded.nats.connect_timeout, std::time::Duration::from_millis(7));
}

#[test]
fn a_duration_key_takes_milliseconds_or_a_duration() {
    let dir = config_dir(&[("base.yaml", "relay:\n  idle_poll_ms: 2s\n")]);
    let loaded = Settings::load_with(
        Some(dir.path()),
        None,
        vars(&[("FLEXCORE__RELAY__LEADER_RETRY_MS", "250")]),
    )
    .unwrap();
    assert_eq!(loaded.relay.idle_poll, std::time::Duration::from_secs(2));
    assert_eq!(loaded.relay.leader_retry, std::time::Duration::from_millis(250));
}

#[test]
fn a_missing_environment_file_is_skipped() {
    let dir = config_dir(&[("base.yaml", "relay:\n  idle_poll_ms: 9\n")]);
    let loaded = Settings::load_with(Some(dir.path()), Some("nowhere"), vars(&[])).unwrap();
    assert_eq!(loaded.relay.idle_poll, std::time::Duration::from_millis(9));
}

#[test]
fn an_explicit_dir_needs_base_yaml() {
    let dir = config_dir(&[]);
    assert!(Settings::load_with(Some(dir.path()), None, vars(&[])).is_err());
}

#[test]
fn the_config_dir_is_found_from_a_subdirectory() {
    let root = config_dir(&[]);
    let config = root.path().join("config");
    let deep = root.path().join("services/x/src");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::create_dir_all(&deep).unwrap();
    assert_eq!(find_config_dir(&deep), None);
    std::fs::write(config.join("base.yaml"), "{}\n").unwrap();
    assert_eq!(find_config_dir(&deep), Some(config.clone()));
    assert_eq!(find_config_dir(root.path()), Some(config));
}

#[test]
fn the_database_url_never_prints() {
    let mut settings = Settings::default();
    settings.database.url = Secret::new("postgres://u:hunter2@db/x");
    let printed = format!("{settings:?} {settings:#?} {}", settings.database.url);
    assert!(!printed.contains("hunter2"), "{printed}");
    assert!(printed.contains("[redacted]"));
}

#[test]
fn durations_follow_the_millisecond_fields() {
    let settings = Settings::default();
    assert_eq!(settings.database.acquire_timeout.as_millis(), 5000);
    assert_eq!(settings.relay.idle_poll.as_millis(), 500);
    assert!(settings.streams.events_max_age().is_zero());
    assert_eq!(settings.streams.duplicate_window().as_secs(), 120);
}

#[test]
fn the_plugin_env_allow_list_is_a_yaml_list_or_a_comma_separated_variable() {
    let dir = config_dir(&[("base.yaml", "runner:\n  plugin_env_allow: [TZ, LANG]\n")]);
    let loaded = Settings::load_with(Some(dir.path()), None, vars(&[])).unwrap();
    assert_eq!(loaded.runner.plugin_env_allow, ["TZ", "LANG"]);
    let loaded = Settings::load_with(
        Some(dir.path()),
        None,
        vars(&[("FLEXCORE__RUNNER__PLUGIN_ENV_ALLOW", "TZ, PGSSL*,")]),
    )
    .unwrap();
    assert_eq!(loaded.runner.plugin_env_allow, ["TZ", "PGSSL*"]);
}

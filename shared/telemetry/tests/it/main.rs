//! Integration tests of `flexcore-telemetry` (one test binary).
//!
//! The subscriber is process-global, so everything that installs it is one test.

use flexcore_config::{LogFormat, TelemetrySettings};

#[test]
fn init_installs_once_and_a_second_call_is_inert() {
    let settings = TelemetrySettings {
        log_format: LogFormat::Json,
        ..TelemetrySettings::default()
    };
    let first = flexcore_telemetry::init("telemetry-it", &settings).unwrap();
    assert!(!first.exports_spans());
    tracing::info!("logged through the installed subscriber");

    let second = flexcore_telemetry::init(
        "telemetry-it",
        &TelemetrySettings {
            otlp_endpoint: Some("http://127.0.0.1:1".to_owned()),
            ..settings.clone()
        },
    )
    .unwrap();
    assert!(!second.exports_spans());
    drop(second);
    drop(first);
    tracing::info!("logging still works after the guards are gone");
}

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

//! The image (`Dockerfile`), the local stack (`docker-compose.yml`) and the OTLP collector
//! config of its observability profile.

use std::collections::{BTreeMap, BTreeSet};

use serde_yaml::Value;

use crate::{assert_service_env, at, documents, load, read, root, seq_at, str_at, ADMIN_PORT, SERVICES};

fn compose() -> Value {
    let mut value: Value = serde_yaml::from_str(&read(&root().join("docker-compose.yml"))).unwrap();
    // `<<: *anchor` merge keys, as Compose resolves them.
    value.apply_merge().unwrap();
    value
}

fn compose_service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    at(compose, &["services", name]).unwrap_or_else(|| panic!("docker-compose.yml: no service {name:?}"))
}

/// Compose's variable interpolation (`$$`, `$NAME`, `${NAME}`, `${NAME:-default}`,
/// `${NAME-default}`, `${NAME:?error}`) with `shell` as the environment of `docker compose`.
fn interpolate(text: &str, shell: &BTreeMap<&str, &str>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        rest = &rest[dollar + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
        } else if let Some(braced) = rest.strip_prefix('{') {
            let end = braced.find('}').unwrap_or_else(|| panic!("unclosed ${{ in {text:?}"));
            let expr = &braced[..end];
            rest = &braced[end + 1..];
            let name_end = expr
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(expr.len());
            let (name, modifier) = expr.split_at(name_end);
            let value = shell.get(name).copied();
            let substituted = match modifier {
                "" => value.unwrap_or("").to_owned(),
                m if m.starts_with(":-") => value.filter(|v| !v.is_empty()).unwrap_or(&m[2..]).to_owned(),
                m if m.starts_with('-') => value.unwrap_or(&m[1..]).to_owned(),
                m if m.starts_with(":?") || m.starts_with('?') => value
                    .unwrap_or_else(|| panic!("{name} must be set: {text:?}"))
                    .to_owned(),
                m => panic!("unsupported interpolation {m:?} in {text:?}"),
            };
            out.push_str(&substituted);
        } else {
            let name_end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            out.push_str(shell.get(&rest[..name_end]).copied().unwrap_or(""));
            rest = &rest[name_end..];
        }
    }
    out.push_str(rest);
    out
}

/// A compose service's `environment:` (map or list form), interpolated.
fn compose_env(service: &Value, shell: &BTreeMap<&str, &str>) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    match service.get("environment") {
        Some(Value::Mapping(map)) => {
            for (key, value) in map {
                let key = key.as_str().expect("environment keys are strings").to_owned();
                if let Some(value) = scalar(value) {
                    env.insert(key, interpolate(&value, shell));
                }
            }
        }
        Some(Value::Sequence(items)) => {
            for item in items {
                let item = item.as_str().expect("environment entries are strings");
                if let Some((key, value)) = item.split_once('=') {
                    env.insert(key.to_owned(), interpolate(value, shell));
                }
            }
        }
        _ => {}
    }
    env
}

/// A scalar as the string a container would see in its environment.
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[test]
fn compose_environment_is_accepted_by_the_config_loader() {
    let compose = compose();
    let defaults = BTreeMap::new();
    // The observability profile's variant: spans exported to the collector.
    let observability = BTreeMap::from([("FLEXCORE_OTLP_ENDPOINT", "http://otel-collector:4317")]);
    for service in &SERVICES {
        let name = service.name;
        let definition = compose_service(&compose, name);
        for shell in [&defaults, &observability] {
            let env = compose_env(definition, shell);
            let foreign: Vec<_> = env.keys().filter(|k| !k.starts_with("FLEXCORE__")).collect();
            assert!(
                foreign.is_empty(),
                "{name}: configure FlexCore only through FLEXCORE__ variables, not {foreign:?}"
            );
            assert_service_env(&format!("docker-compose.yml service {name}"), service, &env);
        }
        let exported = compose_env(definition, &observability);
        assert_eq!(
            exported["FLEXCORE__TELEMETRY__OTLP_ENDPOINT"], "http://otel-collector:4317",
            "{name}: the observability profile's endpoint reaches the service"
        );
    }
    // A typo among the compose variables is refused (the command service's plus one).
    let mut env = compose_env(compose_service(&compose, "command"), &defaults);
    env.insert("FLEXCORE__DATABASE__ULR".to_owned(), "postgres://x@y/z".to_owned());
    assert!(
        load(&env).is_err(),
        "a typo among the compose variables must be refused"
    );
}

#[test]
fn compose_services_have_health_checks_dependencies_and_one_image() {
    let compose = compose();
    let dockerfile = read(&root().join("Dockerfile"));
    for infra in ["nats", "postgres"] {
        let test = seq_at(compose_service(&compose, infra), &["healthcheck", "test"]);
        assert!(
            !test.is_empty(),
            "{infra} needs a healthcheck (the services wait for it)"
        );
    }
    let nats_check: Vec<_> = seq_at(compose_service(&compose, "nats"), &["healthcheck", "test"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        nats_check
            .iter()
            .any(|a| a.contains(":8222/healthz?js-enabled-only=true")),
        "{nats_check:?}"
    );

    let mut images = BTreeSet::new();
    let mut builds = BTreeSet::new();
    for service in &SERVICES {
        let (name, binary) = (service.name, service.binary);
        let definition = compose_service(&compose, name);
        let command: Vec<_> = match definition.get("command") {
            Some(Value::Sequence(items)) => items.iter().filter_map(Value::as_str).collect(),
            Some(Value::String(s)) => s.split_whitespace().collect(),
            _ => panic!("{name}: `command:` must pick the binary"),
        };
        assert_eq!(command.first(), Some(&binary), "{name}: runs {binary}");

        let test: Vec<_> = seq_at(definition, &["healthcheck", "test"])
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let url = format!("http://127.0.0.1:{ADMIN_PORT}/health/ready");
        assert!(
            test.contains(&url.as_str()),
            "{name}: healthcheck on {url}, got {test:?}"
        );
        let tool = test.iter().find(|a| **a != "CMD" && **a != "CMD-SHELL").unwrap();
        assert!(["curl", "wget"].contains(tool), "{name}: health check tool {tool}");
        let installs = dockerfile
            .lines()
            .any(|l| l.contains("apt-get install") && l.split_whitespace().any(|w| w == *tool));
        assert!(installs, "the runtime image must install {tool} for the health check");

        let condition = |dep: &str| str_at(definition, &["depends_on", dep, "condition"]);
        assert_eq!(
            condition("setup"),
            Some("service_completed_successfully"),
            "{name} waits for the streams (setup)"
        );
        if service.uses_postgres {
            assert_eq!(
                condition("postgres"),
                Some("service_healthy"),
                "{name} waits for healthy Postgres"
            );
        } else {
            assert!(
                at(definition, &["depends_on", "postgres"]).is_none(),
                "{name} does not use Postgres"
            );
        }

        images.insert(
            str_at(definition, &["image"])
                .unwrap_or_else(|| panic!("{name}: image"))
                .to_owned(),
        );
        builds.insert(serde_yaml::to_string(definition.get("build").expect("build")).unwrap());
        let context = str_at(definition, &["build", "context"]).unwrap_or(".");
        let dockerfile_path = str_at(definition, &["build", "dockerfile"]).unwrap_or("Dockerfile");
        assert!(
            root().join(context).join(dockerfile_path).is_file(),
            "{name}: build file"
        );
    }
    // The streams: created by the setup identity once NATS is up, nobody else.
    let setup = compose_service(&compose, "setup");
    assert_eq!(
        seq_at(setup, &["command"])
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>(),
        ["flexcore-command", "setup"]
    );
    assert_eq!(
        str_at(setup, &["depends_on", "nats", "condition"]),
        Some("service_healthy")
    );
    assert_eq!(
        str_at(setup, &["environment", "FLEXCORE__NATS__NKEY_SEED_FILE"]),
        Some("/keys/setup.nk")
    );
    let setup_env = compose_env(setup, &BTreeMap::new());
    assert!(load(&setup_env).is_ok(), "setup's environment: {setup_env:?}");
    assert_eq!(images.len(), 1, "one image for every service: {images:?}");
    assert_eq!(builds.len(), 1, "one build for every service: {builds:?}");

    // Bind mounts name files that exist (e.g. the collector's config).
    for (name, service) in compose["services"].as_mapping().unwrap() {
        for volume in seq_at(service, &["volumes"]).iter().filter_map(Value::as_str) {
            if let Some(source) = volume.strip_prefix("./") {
                let source = source.split(':').next().unwrap();
                assert!(
                    root().join(source).exists(),
                    "{name:?}: mount source {source} is missing"
                );
            }
        }
    }
}

#[test]
fn the_image_carries_config_binaries_and_plugins() {
    let dockerfile = read(&root().join("Dockerfile"));
    // The base images are build arguments whose defaults are the public images.
    assert!(dockerfile.contains("ARG RUST_IMAGE=rust:1.95-bookworm"));
    assert!(dockerfile.contains("FROM ${RUST_IMAGE} AS source"));
    assert!(dockerfile.contains("ARG RUNTIME_IMAGE=debian:bookworm-slim"));
    assert!(dockerfile.contains("FROM ${RUNTIME_IMAGE} AS runtime"));
    // One multi-call binary, and a link to it for every program the compose file and the
    // Kubernetes manifests start (the binary answers to each of those names).
    assert!(dockerfile.contains("-p flexcore-multicall --bin flexcore"));
    let links = dockerfile
        .lines()
        .find(|l| l.contains("for program in"))
        .expect("the Dockerfile links the programs to the binary");
    let multicall = read(&root().join("services/multicall/src/main.rs"));
    for program in SERVICES.iter().map(|s| s.binary).chain(["flexctl"]) {
        assert!(
            links.contains(&format!(" {program}")),
            "the Dockerfile links {program}: {links}"
        );
        assert!(
            multicall.contains(&format!("(\"{program}\",")),
            "the multi-call binary runs {program}"
        );
    }
    // The services find base.yaml through FLEXCORE_CONFIG_DIR (shared/config/src/load.rs).
    assert!(dockerfile.contains("ENV FLEXCORE_CONFIG_DIR=/etc/flexcore"));
    assert!(dockerfile.contains("COPY config/ /etc/flexcore/"));
    assert!(root().join("config/base.yaml").is_file());
    assert!(dockerfile.contains("bash plugins/build.sh") && dockerfile.contains("/usr/share/flexcore/plugins/"));
    let user = dockerfile
        .lines()
        .rfind(|l| l.starts_with("USER "))
        .expect("a USER line");
    let uid = user["USER ".len()..].split(':').next().unwrap();
    assert!(
        uid.parse::<u32>().is_ok_and(|uid| uid > 0),
        "numeric non-root user, got {user:?}"
    );
    let ignore = read(&root().join(".dockerignore"));
    for entry in ["target/", ".git/", ".flexcore/"] {
        assert!(ignore.lines().any(|l| l.trim() == entry), ".dockerignore lists {entry}");
    }
}

/// The Dockerfile's global `ARG NAME=default` lines (before the first `FROM`).
fn dockerfile_arg_defaults(dockerfile: &str) -> BTreeMap<String, String> {
    dockerfile
        .lines()
        .take_while(|l| !l.starts_with("FROM "))
        .filter_map(|l| l.strip_prefix("ARG "))
        .filter_map(|l| l.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

#[test]
fn compose_defaults_are_the_public_images_and_ports() {
    // Unset variables give a user today's stack: the public images, the usual host ports,
    // the Dockerfile's own defaults for its build arguments (CI sets them to stand-ins).
    let compose = compose();
    let defaults = BTreeMap::new();
    let image = |name: &str| interpolate(str_at(compose_service(&compose, name), &["image"]).unwrap(), &defaults);
    assert_eq!(image("nats"), "nats:2.10-alpine");
    assert_eq!(image("postgres"), "postgres:16");
    assert_eq!(image("command"), "flexcore:local");
    let ports = |name: &str| -> Vec<String> {
        seq_at(compose_service(&compose, name), &["ports"])
            .iter()
            .filter_map(Value::as_str)
            .map(|p| interpolate(p, &defaults))
            .collect()
    };
    assert_eq!(ports("nats"), ["127.0.0.1:4222:4222"]);
    assert_eq!(ports("gateway"), ["127.0.0.1:8080:8080"]);
    let moved = BTreeMap::from([("FLEXCORE_NATS_PORT", "14222"), ("FLEXCORE_NATS_IMAGE", "local/nats:1")]);
    let nats = compose_service(&compose, "nats");
    assert_eq!(interpolate(str_at(nats, &["image"]).unwrap(), &moved), "local/nats:1");
    assert_eq!(
        interpolate(seq_at(nats, &["ports"])[0].as_str().unwrap(), &moved),
        "127.0.0.1:14222:4222"
    );

    let dockerfile = read(&root().join("Dockerfile"));
    assert!(
        !dockerfile.lines().any(|l| l.starts_with("# syntax=")),
        "no `# syntax=` line: it makes BuildKit pull a frontend image from a registry"
    );
    let declared = dockerfile_arg_defaults(&dockerfile);
    assert_eq!(declared.get("BINARIES").map(String::as_str), Some("source"));
    let args = at(compose_service(&compose, "command"), &["build", "args"])
        .and_then(Value::as_mapping)
        .expect("build args");
    for (name, value) in args {
        let name = name.as_str().unwrap();
        let value = interpolate(value.as_str().unwrap(), &defaults);
        let dockerfile_default = declared
            .get(name)
            .cloned()
            .or_else(|| {
                // A stage's own ARG (DIST, in the prebuilt stage).
                dockerfile
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("ARG {name}=")).map(str::to_owned))
            })
            .unwrap_or_else(|| panic!("build arg {name} is not declared in the Dockerfile"));
        assert_eq!(
            value, dockerfile_default,
            "build arg {name}: compose's default is the Dockerfile's"
        );
    }
    // The prebuilt stage's binaries are in the build context; their debug info is not.
    let ignore = read(&root().join(".dockerignore"));
    let lines: Vec<_> = ignore.lines().map(str::trim).collect();
    let excluded = lines.iter().position(|l| *l == "target/").unwrap();
    let included = lines.iter().position(|l| *l == "!target/dist/").expect("!target/dist/");
    assert!(included > excluded, "the exception comes after target/");
    assert!(!lines.iter().any(|l| l.contains("dist-debuginfo") && l.starts_with('!')));
}

#[test]
fn the_collector_config_defines_every_component_its_pipelines_use() {
    let config = documents(&root().join("deploy/otel-collector.yaml")).remove(0);
    let pipelines = at(&config, &["service", "pipelines"])
        .and_then(Value::as_mapping)
        .unwrap();
    assert!(pipelines.contains_key("traces"), "FlexCore exports traces");
    for (pipeline, body) in pipelines {
        for section in ["receivers", "processors", "exporters"] {
            for component in seq_at(body, &[section]).iter().filter_map(Value::as_str) {
                assert!(
                    at(&config, &[section, component]).is_some(),
                    "{pipeline:?} uses undefined {component}"
                );
            }
        }
    }
}

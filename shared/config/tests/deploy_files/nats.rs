//! The NATS server config (`deploy/nats/`): the roles' permissions cover the subjects the
//! code uses, nats-server accepts it with generated identities, and every Deployment logs
//! in with its own NKey.

use std::collections::BTreeMap;
use std::path::Path;

use crate::kustomize::{binary, containers, stack_layers, Source};
use crate::{read, root, service_of};

/// `pub const NAME: &str = "value";` of a source file.
fn string_constants(path: &Path) -> BTreeMap<String, String> {
    read(path)
        .lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix("pub const ")?;
            let (name, rest) = rest.split_once(": &str = \"")?;
            let value = rest.strip_suffix("\";")?;
            Some((name.to_owned(), value.to_owned()))
        })
        .collect()
}

/// The streams come from the setup Job, logged in as `setup` with its own Secret.
#[test]
fn the_setup_job_creates_the_streams_as_the_setup_identity() {
    for layer in stack_layers() {
        let what = format!("{}: Job flexcore-setup", layer.dir.display());
        let job = layer
            .find("Job", "flexcore-setup")
            .unwrap_or_else(|| panic!("{what} is missing"));
        let container = &containers(&job.value)[0];
        let args: Vec<_> = crate::seq_at(container, &["args"])
            .iter()
            .filter_map(|a| a.as_str())
            .collect();
        assert_eq!(args, ["flexcore-command", "setup"], "{what}");
        let vars = layer.container_vars(job, container);
        assert!(
            matches!(&vars["FLEXCORE__NATS__NKEY_SEED"].source, Source::Secret(name) if name == "flexcore-nats-setup"),
            "{what}: the seed must come from the Secret flexcore-nats-setup"
        );
        let env = layer.container_env(job, container);
        assert!(crate::load(&env).is_ok(), "{what}: {env:?}");
    }
}

/// Every Deployment logs in to NATS with its own identity: its service's NKey seed from its
/// own Secret (not a ConfigMap, not a plain `env` value), the identities file mounted, no
/// credentials in the URL.
#[test]
fn deployments_log_in_with_their_own_nkey_from_a_secret() {
    for layer in stack_layers() {
        for deployment in layer.of_kind("Deployment") {
            let what = format!("{}: {}", layer.dir.display(), deployment.what());
            for container in containers(&deployment.value) {
                let vars = layer.container_vars(deployment, container);
                let service = service_of(binary(&what, container));
                let seed = vars
                    .get("FLEXCORE__NATS__NKEY_SEED")
                    .unwrap_or_else(|| panic!("{what}: no FLEXCORE__NATS__NKEY_SEED"));
                assert!(
                    matches!(&seed.source, Source::Secret(name) if *name == format!("flexcore-nats-{}", service.name)),
                    "{what}: the seed must come from the Secret flexcore-nats-{}, not {:?}",
                    service.name,
                    seed.source
                );
                for key in ["FLEXCORE__NATS__USER", "FLEXCORE__NATS__PASSWORD"] {
                    assert!(!vars.contains_key(key), "{what}: {key}: identities log in with NKeys");
                }
                let file = &vars
                    .get("FLEXCORE__SECURITY__IDENTITIES_FILE")
                    .unwrap_or_else(|| panic!("{what}: no FLEXCORE__SECURITY__IDENTITIES_FILE"))
                    .value;
                let mounted = crate::seq_at(container, &["volumeMounts"])
                    .iter()
                    .filter_map(|m| crate::str_at(m, &["mountPath"]))
                    .any(|path| Path::new(file).parent() == Some(Path::new(path)));
                assert!(mounted, "{what}: the identities file {file} is mounted");
                let url = &vars["FLEXCORE__NATS__URL"].value;
                assert!(!url.contains('@'), "{what}: credentials in the NATS URL {url}");
            }
        }
    }
}

/// Every subject the code uses is in some role's NATS permissions (shared/security's
/// `permissions::of`, which the servers' accounts block is generated from), and the
/// cluster configuration includes that block.
#[test]
fn nats_permissions_cover_the_subjects_the_services_use() {
    let nats = root().join("deploy/nats");
    let server = read(&nats.join("nats-server.conf"));
    assert!(
        server.lines().any(|l| l.trim() == "include ./nats-accounts.conf"),
        "nats-server.conf includes the identities' accounts"
    );
    assert!(
        server.contains("jetstream") && server.contains("cluster"),
        "a JetStream cluster"
    );
    assert_eq!(server.matches("nats://nats-").count(), 3, "routes to three nodes");
    assert!(!server.contains("no_auth_user"), "no anonymous user");

    let granted: Vec<String> = flexcore_security::Role::ALL
        .into_iter()
        .flat_map(|role| {
            let p = flexcore_security::permissions::of(role, "x");
            p.publish_allow.into_iter().chain(p.subscribe_allow)
        })
        .collect();
    let subjects = string_constants(&root().join("shared/contracts/src/subjects.rs"));
    for (name, subject) in subjects.iter().filter(|(_, s)| s.starts_with("flexcore.")) {
        if name.ends_with("QUEUE_GROUP") {
            continue;
        }
        assert!(
            granted.iter().any(|g| g == subject),
            "no role's permissions mention {name} = {subject} (shared/security/src/permissions.rs)"
        );
    }
}

/// A directory holding `config` (a file of deploy/nats) and, at `accounts` relative to it,
/// the accounts block of freshly generated identities.
fn with_accounts(config: &str, accounts: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(root().join("deploy/nats").join(config), dir.path().join(config)).unwrap();
    let block = flexcore_security::kit::Kit::generate(&flexcore_security::kit::STANDARD).accounts_block();
    let path = dir.path().join(accounts);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, block).unwrap();
    dir
}

/// The `{name: X, value: "Y"}` (or `name: X` then `value: "Y"`) entries of the
/// StatefulSet env the header comment of nats-server.conf documents.
fn documented_env(config: &str) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let mut name: Option<String> = None;
    for line in config.lines().map(str::trim).take_while(|l| l.starts_with('#')) {
        let line = line.trim_start_matches('#').trim().trim_start_matches("- ");
        let unquote = |v: &str| v.trim().trim_end_matches('}').trim().trim_matches('"').to_owned();
        if let Some(rest) = line.strip_prefix("{name: ") {
            if let Some((n, value)) = rest.split_once(", value: ") {
                env.insert(n.to_owned(), unquote(value));
            }
        } else if let Some(n) = line.strip_prefix("name: ") {
            name = Some(n.to_owned());
        } else if let (Some(value), Some(n)) = (line.strip_prefix("value: "), name.take()) {
            env.insert(n, unquote(value));
        }
    }
    env
}

/// `nats-server -t` parses the configuration exactly as the server will (skipped when
/// the binary is not installed; the workspace's other tests need it anyway).
#[test]
fn nats_server_accepts_the_configuration() {
    let nats = with_accounts("nats-server.conf", "nats-accounts.conf");
    let text = read(&nats.path().join("nats-server.conf"));
    let mut command = std::process::Command::new("nats-server");
    command
        .arg("-t")
        .arg("-c")
        .arg(nats.path().join("nats-server.conf"))
        .current_dir(nats.path());
    // Every `$VARIABLE` reference (not quoted subjects such as "$JS.API.>") gets the value
    // the file's header documents for a Kubernetes StatefulSet (a pod name for the one
    // that comes from the pod), so the documented environment is what is checked.
    let documented = documented_env(&text);
    for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '$')) {
        if let Some(name) = word.strip_prefix('$').filter(|n| !n.is_empty() && !n.contains('$')) {
            if name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            {
                let value = match documented.get(name) {
                    Some(value) => value.clone(),
                    None if name == "NATS_SERVER_NAME" => "nats-0".to_owned(),
                    None => panic!("nats-server.conf uses ${name}, which its header does not document"),
                };
                command.env(name, value);
            }
        }
    }
    match command.output() {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("nats-server not installed: configuration not checked by the server");
        }
        Err(error) => panic!("running nats-server: {error}"),
        Ok(output) => assert!(
            output.status.success(),
            "nats-server -t refuses deploy/nats/nats-server.conf:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

/// The single-node configuration (docker-compose mounts it) parses and states the
/// `max_payload` every configuration states, the cluster's.
#[test]
fn the_single_node_configuration_is_valid_and_states_the_same_max_payload() {
    let nats = root().join("deploy/nats");
    let max_payload = |text: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix("max_payload:").map(|v| v.trim().to_owned()))
    };
    let single = read(&nats.join("single.conf"));
    assert_eq!(max_payload(&single), Some("1MB".to_owned()));
    assert_eq!(max_payload(&read(&nats.join("nats-server.conf"))), max_payload(&single));
    let compose = read(&root().join("docker-compose.yml"));
    assert!(
        compose.contains("./deploy/nats/single.conf:/etc/nats/single.conf:ro")
            && compose.contains(r#"command: ["-c", "/etc/nats/single.conf"]"#)
            && compose.contains("keys:/etc/nats/keys:ro"),
        "docker-compose.yml runs NATS with deploy/nats/single.conf and the identities' accounts"
    );
    assert!(
        single.lines().any(|l| l.trim() == "include ./keys/nats-accounts.conf"),
        "single.conf includes the identities' accounts"
    );
    let checked = with_accounts("single.conf", "keys/nats-accounts.conf");
    match std::process::Command::new("nats-server")
        .arg("-t")
        .arg("-c")
        .arg(checked.path().join("single.conf"))
        .output()
    {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("nats-server not installed: configuration not checked by the server");
        }
        Err(error) => panic!("running nats-server: {error}"),
        Ok(output) => assert!(
            output.status.success(),
            "nats-server -t refuses deploy/nats/single.conf:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

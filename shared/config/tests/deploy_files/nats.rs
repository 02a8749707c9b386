//! The NATS server config (`deploy/nats/`): its users' permissions cover the subjects the
//! code uses, nats-server accepts it, and every Deployment logs in as its own user.

use std::collections::BTreeMap;
use std::path::Path;

use crate::kustomize::{binary, containers, stack_layers, Source};
use crate::{read, root, service_of, SERVICES};

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

/// The `{ … }` block of the NATS user `user` in `conf`.
fn user_block<'a>(conf: &'a str, user: &str) -> &'a str {
    let at = conf
        .find(&format!("user: {user}\n"))
        .unwrap_or_else(|| panic!("no NATS user {user}"));
    let start = conf[..at].rfind('{').unwrap();
    let mut depth = 0;
    for (i, c) in conf[start..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return &conf[start..=start + i];
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced block of user {user}");
}

/// Every Deployment logs in to NATS as its service's user of accounts.conf, with the user
/// and the password from a Secret (not a ConfigMap, not a plain `env` value, not the URL).
#[test]
fn deployments_log_in_as_their_nats_user_from_a_secret() {
    let conf = read(&root().join("deploy/nats/accounts.conf"));
    for layer in stack_layers() {
        for deployment in layer.of_kind("Deployment") {
            let what = format!("{}: {}", layer.dir.display(), deployment.what());
            for container in containers(&deployment.value) {
                let vars = layer.container_vars(deployment, container);
                for key in ["FLEXCORE__NATS__USER", "FLEXCORE__NATS__PASSWORD"] {
                    let var = vars.get(key).unwrap_or_else(|| panic!("{what}: no {key}"));
                    assert!(
                        matches!(var.source, Source::Secret(_)),
                        "{what}: {key} must come from a Secret, not {:?}",
                        var.source
                    );
                }
                let user = vars["FLEXCORE__NATS__USER"].value.as_str();
                let service = service_of(binary(&what, container));
                assert_eq!(user, service.name, "{what}: logs in as its own NATS user");
                assert!(
                    user_block(&conf, user).contains("password: $"),
                    "{what}: NATS user {user} has a password"
                );
                let url = &vars["FLEXCORE__NATS__URL"].value;
                assert!(!url.contains('@'), "{what}: credentials in the NATS URL {url}");
            }
        }
    }
}

#[test]
fn nats_permissions_cover_the_subjects_the_services_use() {
    let nats = root().join("deploy/nats");
    let server = read(&nats.join("nats-server.conf"));
    for include in server.lines().filter_map(|l| l.trim().strip_prefix("include ")) {
        assert!(
            nats.join(include.trim()).is_file(),
            "nats-server.conf includes missing {include}"
        );
    }
    assert!(
        server.contains("jetstream") && server.contains("cluster"),
        "a JetStream cluster"
    );
    assert_eq!(server.matches("nats://nats-").count(), 3, "routes to three nodes");
    let conf = read(&nats.join("accounts.conf"));
    let quoted = |subject: &str| format!("\"{subject}\"");

    let subjects = string_constants(&root().join("shared/contracts/src/subjects.rs"));
    let constant = |name: &str| {
        subjects
            .get(name)
            .unwrap_or_else(|| panic!("subjects.rs has no {name}"))
            .as_str()
    };
    for (name, subject) in subjects.iter().filter(|(_, s)| s.starts_with("flexcore.")) {
        assert!(
            conf.contains(&quoted(subject)),
            "no permission mentions {name} = {subject}"
        );
    }
    let bucket = string_constants(&root().join("shared/plugin-store/src/lib.rs"))["BUCKET"].clone();

    let events_ack = format!("$JS.ACK.{}.>", constant("EVENTS_STREAM"));
    let work_ack = format!("$JS.ACK.{}.>", constant("WORK_STREAM"));
    let object_store = format!("$O.{bucket}.>");
    let wanted: [(&str, Vec<&str>); 6] = [
        (
            "command",
            vec![
                constant("COMMANDS_WILDCARD"),
                constant("EVENTS_WILDCARD"),
                constant("WORK_WILDCARD"),
            ],
        ),
        (
            "projection",
            vec![
                constant("QUERIES_WILDCARD"),
                constant("PROJECTION_POSITIONS_WILDCARD"),
                events_ack.as_str(),
            ],
        ),
        (
            "scheduler",
            vec![constant("SCHEDULER_PRESENCE"), constant("RUN_HEARTBEATS_WILDCARD")],
        ),
        (
            "runner",
            vec![
                constant("LOGS_WILDCARD"),
                constant("RUN_HEARTBEATS_WILDCARD"),
                work_ack.as_str(),
                "$JS.FC.>",
            ],
        ),
        (
            "flexctl",
            vec![
                constant("COMMANDS_WILDCARD"),
                constant("QUERIES_WILDCARD"),
                object_store.as_str(),
            ],
        ),
        (
            "client",
            vec![constant("COMMANDS_WILDCARD"), constant("QUERIES_WILDCARD")],
        ),
    ];
    for (user, subjects) in wanted {
        let block = user_block(&conf, user);
        assert!(
            block.contains("password: $"),
            "{user}: password from the environment, not the file"
        );
        assert!(block.contains(&quoted("_INBOX.>")), "{user}: replies to its requests");
        for subject in subjects {
            assert!(
                block.contains(&quoted(subject)),
                "{user}: permission for {subject} missing"
            );
        }
        // The services and the operator use JetStream; applications do not.
        let jetstream = SERVICES.iter().any(|s| s.name == user) || user == "flexctl";
        assert_eq!(block.contains(&quoted("$JS.API.>")), jetstream, "{user}: JetStream API");
    }
    // Request/reply servers answer on the requester's inbox.
    for user in ["command", "projection"] {
        assert!(
            user_block(&conf, user).contains("allow_responses: true"),
            "{user}: allow_responses"
        );
    }
    assert!(conf.contains("jetstream: enabled"));
}

/// `nats-server -t` parses the configuration exactly as the server will (skipped when
/// the binary is not installed; the workspace's other tests need it anyway).
#[test]
fn nats_server_accepts_the_configuration() {
    let nats = root().join("deploy/nats");
    let text = read(&nats.join("nats-server.conf")) + &read(&nats.join("accounts.conf"));
    let mut command = std::process::Command::new("nats-server");
    command
        .arg("-t")
        .arg("-c")
        .arg(nats.join("nats-server.conf"))
        .current_dir(&nats);
    // Every `$VARIABLE` reference (not quoted subjects such as "$JS.API.>") gets a value.
    for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '$')) {
        if let Some(name) = word.strip_prefix('$').filter(|n| !n.is_empty() && !n.contains('$')) {
            if name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            {
                command.env(name, format!("test-{}", name.to_lowercase()));
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
            && compose.contains(r#"command: ["-c", "/etc/nats/single.conf"]"#),
        "docker-compose.yml runs NATS with deploy/nats/single.conf"
    );
    match std::process::Command::new("nats-server")
        .arg("-t")
        .arg("-c")
        .arg(nats.join("single.conf"))
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

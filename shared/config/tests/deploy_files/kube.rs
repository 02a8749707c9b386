//! The Kubernetes manifests under `deploy/` (kustomize): every file used and existing,
//! and the Deployments, autoscalers, budgets and Services each layer renders.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::path::Path;

use serde_yaml::Value;

use crate::kustomize::{binary, containers, data_of, deploy_yaml_files, flexcore_env, layers, stack_layers};
use crate::{
    assert_loads, assert_service_env, at, documents, root, seq_at, service_of, str_at, ADMIN_PORT, GATEWAY_PORT,
    SERVICES,
};

/// The repository part of an image reference (`registry:5000/a/b:tag` → `registry:5000/a/b`).
fn image_repository(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    match image.rfind(':') {
        Some(colon) if !image[colon..].contains('/') => &image[..colon],
        _ => image,
    }
}

/// A probe's `httpGet` path and port (a named port resolved through the container's ports).
fn probe(container: &Value, probe: &str) -> (String, u64) {
    let get = at(container, &[probe, "httpGet"]).unwrap_or_else(|| panic!("no httpGet {probe}"));
    let port = match get.get("port") {
        Some(Value::Number(n)) => n.as_u64().unwrap(),
        Some(Value::String(name)) => seq_at(container, &["ports"])
            .iter()
            .find(|p| str_at(p, &["name"]) == Some(name))
            .and_then(|p| p.get("containerPort")?.as_u64())
            .unwrap_or_else(|| panic!("{probe}: no port named {name}")),
        other => panic!("{probe}: port {other:?}"),
    };
    (str_at(get, &["path"]).unwrap().to_owned(), port)
}

#[test]
fn every_yaml_under_deploy_parses_and_kustomizations_name_what_exists() {
    let layers = layers();
    let dirs: Vec<_> = layers.iter().map(|l| l.dir.strip_prefix(root()).unwrap()).collect();
    assert!(dirs.contains(&Path::new("deploy/base")), "{dirs:?}");
    assert!(dirs.contains(&Path::new("deploy/overlays/production")), "{dirs:?}");
    let mut new_names = BTreeSet::new();
    let mut image_names = BTreeSet::new();
    for layer in &layers {
        let here = layer.dir.display();
        for patch in &layer.patches {
            assert!(
                layer.find(patch.kind(), patch.name()).is_some(),
                "{here}: patch of a missing {}",
                patch.what()
            );
        }
        for replicas in seq_at(&layer.kustomization, &["replicas"]) {
            let name = str_at(replicas, &["name"]).unwrap();
            assert!(
                layer.find("Deployment", name).is_some(),
                "{here}: replicas of a missing Deployment {name}"
            );
        }
        for image in seq_at(&layer.kustomization, &["images"]) {
            image_names.insert(str_at(image, &["name"]).unwrap().to_owned());
            new_names.extend(str_at(image, &["newName"]).map(str::to_owned));
        }
    }
    // Every `images` entry renames the Deployments' image, or a name a base gave it.
    let images: BTreeSet<_> = layers
        .iter()
        .flat_map(|l| l.of_kind("Deployment"))
        .flat_map(|d| containers(&d.value).iter().filter_map(|c| str_at(c, &["image"])))
        .collect();
    for name in &image_names {
        let known = images.contains(name.as_str()) || new_names.contains(name);
        assert!(
            known,
            "kustomize image {name} matches no image ({images:?} / {new_names:?})"
        );
    }
    // Every manifest file is used by a kustomization (else it would silently not apply).
    let used: BTreeSet<_> = layers.iter().flat_map(|l| l.files.iter().cloned()).collect();
    for file in deploy_yaml_files() {
        let docs = documents(&file);
        assert!(!docs.is_empty(), "{}: empty", file.display());
        let manifest = docs
            .iter()
            .any(|d| d.get("kind").is_some() && d.get("apiVersion").is_some());
        if manifest && !file.ends_with("kustomization.yaml") {
            assert!(
                used.contains(&file.canonicalize().unwrap()),
                "{} is used by no kustomization",
                file.display()
            );
        }
    }
}

#[test]
fn deployments_have_probes_resources_one_image_and_no_root() {
    for layer in stack_layers() {
        let here = layer.dir.display();
        let mut binaries = BTreeSet::new();
        let mut repositories = BTreeSet::new();
        for deployment in layer.of_kind("Deployment") {
            let what = deployment.what();
            let spec = &deployment.value["spec"];
            let pod_security = at(spec, &["template", "spec", "securityContext"]);
            assert_eq!(
                pod_security.map(|s| &s["runAsNonRoot"]),
                Some(&Value::Bool(true)),
                "{what}"
            );
            assert!(
                layer.selects(at(spec, &["selector", "matchLabels"]).unwrap()),
                "{what}: selector"
            );
            assert!(!containers(&deployment.value).is_empty(), "{what}: no containers");
            for container in containers(&deployment.value) {
                let image = str_at(container, &["image"]).unwrap_or_else(|| panic!("{what}: image"));
                repositories.insert(image_repository(image).to_owned());
                let binary = service_of(binary(&what, container)).binary;
                assert!(binaries.insert(binary), "{here}: two Deployments run {binary}");

                for (kind, path) in [("livenessProbe", "/health/live"), ("readinessProbe", "/health/ready")] {
                    assert_eq!(probe(container, kind), (path.to_owned(), ADMIN_PORT), "{what}");
                }
                for bound in ["requests", "limits"] {
                    for resource in ["cpu", "memory"] {
                        let set = at(container, &["resources", bound, resource]).is_some();
                        assert!(set, "{what}: resources.{bound}.{resource}");
                    }
                }
                let security = container
                    .get("securityContext")
                    .unwrap_or_else(|| panic!("{what}: securityContext"));
                assert_eq!(security["readOnlyRootFilesystem"], Value::Bool(true), "{what}");
                assert_eq!(security["allowPrivilegeEscalation"], Value::Bool(false), "{what}");
            }
        }
        let all: BTreeSet<_> = SERVICES.iter().map(|s| s.binary).collect();
        assert_eq!(binaries, all, "{here}: one Deployment per service");
        assert_eq!(
            repositories.len(),
            1,
            "{here}: one image repository, got {repositories:?}"
        );
    }
}

#[test]
fn kubernetes_environment_is_accepted_by_the_config_loader() {
    for layer in stack_layers() {
        let here = layer.dir.display();
        for deployment in layer.of_kind("Deployment") {
            let what = format!("{here}: {}", deployment.what());
            for container in containers(&deployment.value) {
                let service = service_of(binary(&what, container));
                assert_service_env(&what, service, &layer.container_env(deployment, container));
            }
        }
        // Each source on its own too (values included: "3" must be a number, …).
        let sources = layer.resources.iter().chain(&layer.patches);
        for doc in sources.filter(|d| ["ConfigMap", "Secret"].contains(&d.kind())) {
            assert_loads(&doc.what(), &data_of(&doc.value));
        }
        for patch in layer.patches.iter().filter(|p| p.kind() == "Deployment") {
            for container in containers(&patch.value) {
                let env: BTreeMap<_, _> = flexcore_env(container)
                    .map(|(key, entry)| {
                        let value = str_at(entry, &["value"]).unwrap_or("from-value-from");
                        (key.to_owned(), value.to_owned())
                    })
                    .collect();
                if !env.is_empty() {
                    assert_loads(&patch.what(), &env);
                }
            }
        }
    }
}

#[test]
fn autoscalers_budgets_and_services_target_existing_deployments() {
    for layer in stack_layers() {
        let here = layer.dir.display();
        let mut scaled = BTreeSet::new();
        for hpa in layer.of_kind("HorizontalPodAutoscaler") {
            let what = hpa.what();
            assert_eq!(str_at(&hpa.value, &["apiVersion"]), Some("autoscaling/v2"), "{what}");
            let target = at(&hpa.value, &["spec", "scaleTargetRef"]).unwrap();
            assert_eq!(str_at(target, &["kind"]), Some("Deployment"), "{what}");
            let name = str_at(target, &["name"]).unwrap();
            let deployment = layer
                .find("Deployment", name)
                .unwrap_or_else(|| panic!("{what}: no Deployment {name}"));
            let replicas = at(&deployment.value, &["spec", "replicas"]);
            assert!(replicas.is_none(), "{}: its HPA owns `replicas`", deployment.what());
            scaled.insert(name.to_owned());
        }
        for wanted in [
            "flexcore-runner",
            "flexcore-command",
            "flexcore-projection",
            "flexcore-gateway",
        ] {
            assert!(scaled.contains(wanted), "{here}: no HPA for {wanted}");
        }
        let budgets = layer.of_kind("PodDisruptionBudget").collect::<Vec<_>>();
        for pdb in &budgets {
            let selector = at(&pdb.value, &["spec", "selector", "matchLabels"]).unwrap();
            assert!(layer.selects(selector), "{} selects no Deployment", pdb.what());
        }
        assert_eq!(
            budgets.len(),
            layer.of_kind("Deployment").count(),
            "{here}: one PDB per Deployment"
        );
        for service in layer.of_kind("Service") {
            assert!(
                layer.selects(&service.value["spec"]["selector"]),
                "{} selects no Deployment",
                service.what()
            );
            let ports = seq_at(&service.value, &["spec", "ports"]);
            let has = |port: u64| ports.iter().any(|p| p["port"].as_u64() == Some(port));
            if service.name() == "flexcore-gateway" {
                assert!(
                    has(GATEWAY_PORT) && !has(ADMIN_PORT),
                    "{}: the API port {GATEWAY_PORT} only",
                    service.what()
                );
            } else {
                assert!(has(ADMIN_PORT), "{}: the admin port {ADMIN_PORT}", service.what());
            }
        }
    }
}

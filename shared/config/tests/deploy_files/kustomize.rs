//! The Kubernetes manifests under `deploy/` as kustomize renders them: [`layers`] loads
//! every kustomization with what its `resources` and `patches` bring in, and
//! [`Layer::container_vars`] tells what a container's environment becomes.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde_yaml::Value;

use crate::{at, documents, documents_of, read, root, seq_at, str_at};

/// One YAML document and the file it came from.
pub(crate) struct Doc {
    file: PathBuf,
    pub(crate) value: Value,
}

impl Doc {
    /// The documents of `text`, read from `file`.
    fn all(file: &Path, text: &str) -> Vec<Doc> {
        documents_of(text, &file.display().to_string())
            .into_iter()
            .map(|value| Doc {
                file: file.to_owned(),
                value,
            })
            .collect()
    }

    pub(crate) fn kind(&self) -> &str {
        str_at(&self.value, &["kind"]).unwrap_or("")
    }

    pub(crate) fn name(&self) -> &str {
        str_at(&self.value, &["metadata", "name"]).unwrap_or("")
    }

    pub(crate) fn what(&self) -> String {
        format!("{} {} ({})", self.kind(), self.name(), self.file.display())
    }
}

/// Where a container's variable comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    ConfigMap(String),
    Secret(String),
    /// A plain `env` entry (a value, or a `valueFrom` other than a Secret key).
    Env,
}

/// A container's variable as this layer renders it.
pub(crate) struct Var {
    pub(crate) value: String,
    pub(crate) source: Source,
}

/// A kustomization with what its `resources` bring in (directories recursively) and its
/// own `patches`; building it asserts that every file they name exists.
pub(crate) struct Layer {
    pub(crate) dir: PathBuf,
    pub(crate) kustomization: Value,
    pub(crate) resources: Vec<Doc>,
    pub(crate) patches: Vec<Doc>,
    /// Every file read for it.
    pub(crate) files: BTreeSet<PathBuf>,
}

impl Layer {
    fn load(dir: &Path) -> Self {
        let kustomization = documents(&dir.join("kustomization.yaml")).remove(0);
        let here = dir.display();
        let (mut resources, mut patches, mut files) = (Vec::new(), Vec::new(), BTreeSet::new());
        // A file's documents; the file is recorded as used.
        let mut read_file = |path: &Path| {
            let file = path.canonicalize().unwrap();
            let docs = Doc::all(&file, &read(&file));
            files.insert(file);
            docs
        };
        let mut bases = Vec::new();
        for entry in seq_at(&kustomization, &["resources"]).iter().filter_map(Value::as_str) {
            let path = dir.join(entry);
            if path.is_dir() {
                assert!(
                    path.join("kustomization.yaml").is_file(),
                    "{here}: {entry} has no kustomization"
                );
                bases.push(Layer::load(&path));
            } else {
                assert!(path.is_file(), "{here}: resource {entry} does not exist");
                resources.extend(read_file(&path));
            }
        }
        let legacy = seq_at(&kustomization, &["patchesStrategicMerge"])
            .iter()
            .filter_map(Value::as_str);
        let mut paths = Vec::new();
        for patch in seq_at(&kustomization, &["patches"]) {
            match (str_at(patch, &["patch"]), str_at(patch, &["path"])) {
                (Some(inline), _) => patches.extend(Doc::all(&dir.join("kustomization.yaml"), inline)),
                (None, Some(path)) => paths.push(path),
                (None, None) => panic!("{here}: a patch needs `path` or `patch`"),
            }
        }
        for entry in paths.into_iter().chain(legacy) {
            let path = dir.join(entry);
            assert!(path.is_file(), "{here}: patch {entry} does not exist");
            patches.extend(read_file(&path));
        }
        for base in bases {
            resources.extend(base.resources);
            files.extend(base.files);
        }
        Layer {
            dir: dir.to_owned(),
            kustomization,
            resources,
            patches,
            files,
        }
    }

    pub(crate) fn find(&self, kind: &str, name: &str) -> Option<&Doc> {
        self.resources.iter().find(|d| d.kind() == kind && d.name() == name)
    }

    pub(crate) fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Doc> + 'a {
        self.resources.iter().filter(move |d| d.kind() == kind)
    }

    fn patches_of<'a>(&'a self, kind: &'a str, name: &'a str) -> impl Iterator<Item = &'a Doc> + 'a {
        self.patches
            .iter()
            .filter(move |p| p.kind() == kind && p.name() == name)
    }

    /// The data of the ConfigMap or Secret `name`, with this layer's patches of it.
    fn data(&self, kind: &str, name: &str) -> Option<BTreeMap<String, String>> {
        let mut data = data_of(&self.find(kind, name)?.value);
        for patch in self.patches_of(kind, name) {
            data.extend(data_of(&patch.value));
        }
        Some(data)
    }

    /// What a container's `FLEXCORE__` environment becomes in this layer, in Kubernetes'
    /// precedence (later wins): its `envFrom` sources, then its `env` entries, then those
    /// of this layer's patches of the container.
    pub(crate) fn container_vars(&self, deployment: &Doc, container: &Value) -> BTreeMap<String, Var> {
        let what = deployment.what();
        let mut vars = BTreeMap::new();
        for from in seq_at(container, &["envFrom"]) {
            let configmap = str_at(from, &["configMapRef", "name"]).map(|n| ("ConfigMap", n));
            let secret = str_at(from, &["secretRef", "name"]).map(|n| ("Secret", n));
            let (kind, name) = configmap.or(secret).unwrap_or_else(|| panic!("{what}: envFrom source"));
            let data = self
                .data(kind, name)
                .unwrap_or_else(|| panic!("{what}: envFrom missing {kind} {name}"));
            let foreign: Vec<_> = data.keys().filter(|k| !k.starts_with("FLEXCORE__")).collect();
            assert!(foreign.is_empty(), "{kind} {name}: not FLEXCORE__ keys {foreign:?}");
            let source = match kind {
                "Secret" => Source::Secret(name.to_owned()),
                _ => Source::ConfigMap(name.to_owned()),
            };
            vars.extend(data.into_iter().map(|(key, value)| {
                let source = source.clone();
                (key, Var { value, source })
            }));
        }
        let name = str_at(container, &["name"]);
        let patched = self
            .patches_of("Deployment", deployment.name())
            .flat_map(|patch| containers(&patch.value))
            .filter(|c| str_at(c, &["name"]) == name);
        for (key, entry) in std::iter::once(container).chain(patched).flat_map(flexcore_env) {
            let secret_ref = at(entry, &["valueFrom", "secretKeyRef"]);
            let var = match (str_at(entry, &["value"]), secret_ref) {
                (None, Some(reference)) => {
                    let secret = str_at(reference, &["name"]).unwrap();
                    let key = str_at(reference, &["key"]).unwrap();
                    let data = self.data("Secret", secret);
                    Var {
                        value: data
                            .and_then(|mut d| d.remove(key))
                            .unwrap_or_else(|| "from-secret".to_owned()),
                        source: Source::Secret(secret.to_owned()),
                    }
                }
                (value, _) => Var {
                    value: value.unwrap_or("from-value-from").to_owned(),
                    source: Source::Env,
                },
            };
            vars.insert(key.to_owned(), var);
        }
        vars
    }

    /// [`Self::container_vars`], values only.
    pub(crate) fn container_env(&self, deployment: &Doc, container: &Value) -> BTreeMap<String, String> {
        let vars = self.container_vars(deployment, container);
        vars.into_iter().map(|(key, var)| (key, var.value)).collect()
    }

    /// Whether a Deployment's pods carry every label of `selector`.
    pub(crate) fn selects(&self, selector: &Value) -> bool {
        let Some(selector) = selector.as_mapping() else {
            return false;
        };
        self.of_kind("Deployment").any(|d| {
            let labels = at(&d.value, &["spec", "template", "metadata", "labels"]);
            selector.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        })
    }
}

/// Every `.yaml` / `.yml` file under `deploy/`, sorted.
pub(crate) fn deploy_yaml_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&root().join("deploy"), &mut files);
    files.sort();
    files
}

/// Every kustomization under `deploy/`.
pub(crate) fn layers() -> Vec<Layer> {
    deploy_yaml_files()
        .iter()
        .filter(|f| f.ends_with("kustomization.yaml"))
        .map(|f| Layer::load(f.parent().unwrap()))
        .collect()
}

/// The kustomizations that deploy FlexCore (their Deployments); optional layers such as
/// `deploy/observability` hold none.
pub(crate) fn stack_layers() -> Vec<Layer> {
    layers()
        .into_iter()
        .filter(|l| l.of_kind("Deployment").next().is_some())
        .collect()
}

pub(crate) fn containers(deployment: &Value) -> &[Value] {
    seq_at(deployment, &["spec", "template", "spec", "containers"])
}

/// The binary a container runs (the image's entrypoint is tini; `args` picks it).
pub(crate) fn binary<'a>(what: &str, container: &'a Value) -> &'a str {
    let binary = seq_at(container, &["args"]).first().and_then(Value::as_str);
    binary.unwrap_or_else(|| panic!("{what}: `args` picks the binary"))
}

/// The string data of a ConfigMap or Secret (Secret `data` is base64: a placeholder
/// stands in, only its keys matter here).
pub(crate) fn data_of(doc: &Value) -> BTreeMap<String, String> {
    let secret = str_at(doc, &["kind"]) == Some("Secret");
    let mut out = BTreeMap::new();
    for section in ["data", "stringData"] {
        for (key, value) in at(doc, &[section]).and_then(Value::as_mapping).into_iter().flatten() {
            let key = key.as_str().unwrap().to_owned();
            let value = match value.as_str() {
                _ if secret && section == "data" => "placeholder",
                Some(value) => value,
                None => panic!("{key}: ConfigMap and Secret values must be strings"),
            };
            out.insert(key, value.to_owned());
        }
    }
    out
}

/// A container's `env:` entries named FLEXCORE__….
pub(crate) fn flexcore_env(container: &Value) -> impl Iterator<Item = (&str, &Value)> {
    seq_at(container, &["env"]).iter().filter_map(|entry| {
        let name = str_at(entry, &["name"]).filter(|n| n.starts_with("FLEXCORE__"))?;
        Some((name, entry))
    })
}

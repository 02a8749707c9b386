#!/usr/bin/env bash
# Renders the Kubernetes manifests under deploy/ with kustomize and validates every object
# offline; exits non-zero on any error. Part of scripts/test.sh.
#
#   scripts/check-k8s.sh
#
# - deploy/base, deploy/overlays/production and deploy/observability are rendered with
#   `kubectl kustomize` (kubectl from Debian trixie's package, into .flexcore/tools/).
# - Built-in kinds: PyPI `kubernetes-validate` (the Kubernetes JSON schemas, bundled) in
#   strict mode (an unknown field is an error), against each version of K8S_VERSIONS.
# - The prometheus-operator resources (PrometheusRule, ServiceMonitor): no bundled schema.
#   They are checked against PyPI `cloudcoil-models-prometheus-operator`, models generated
#   from the operator's CRD schemas (types, required fields, enums, patterns); a field the
#   models do not know is an error. The alert rules (the PrometheusRule's `spec`) are
#   checked by `promtool check rules` (Debian trixie's promtool): PromQL, templates, `for`.
# - And a few things the API server checks that the schemas do not: names, port names,
#   quantities, requests not above limits; JSON in ConfigMaps (the Grafana dashboard).
# Not checked: anything only a cluster knows (admission webhooks, quotas, the CRDs'
# CEL rules). shared/config/tests/deploy_files/ checks references between the objects.
set -euo pipefail
cd "$(dirname "$0")/.."

# Kubernetes versions whose schemas the built-in objects must satisfy: the version of the
# kubectl used here (Debian trixie's) and the newest that kubernetes-validate bundles.
K8S_VERSIONS=(${FLEXCORE_K8S_VERSIONS:-1.32 1.37})
KUBERNETES_VALIDATE=1.37.0
CLOUDCOIL=0.6.0
PROMETHEUS_OPERATOR_MODELS=0.80.1.0
LAYERS=(deploy/base deploy/overlays/production deploy/observability)

TOOLS=$PWD/.flexcore/tools
VENV=$PWD/.flexcore/k8s-validate
mkdir -p "$TOOLS"

die() { echo "check-k8s: $*" >&2; exit 1; }

# A binary from a Debian trixie package (bookworm's glibc is new enough for these Go
# programs): downloaded and signature-checked by apt with a private state directory.
trixie_tool() {
  local package=$1 binary=$2
  local apt=$TOOLS/apt-trixie
  mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/debs"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" \
    >"$apt/sources.list"
  local opts=(-q -o "Dir::Etc::SourceList=$apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o Dir::State::status=/dev/null
    -o APT::Sandbox::User=root)
  apt-get "${opts[@]}" update >"$apt/update.log" 2>&1 || { cat "$apt/update.log" >&2; die "apt-get update (trixie) failed"; }
  rm -f "$apt/debs/${package}_"*.deb
  (cd "$apt/debs" && apt-get "${opts[@]}" download "$package" >/dev/null) || die "downloading trixie's $package failed"
  dpkg-deb --fsys-tarfile "$apt/debs/${package}_"*.deb | tar -xO "./usr/bin/$binary" >"$TOOLS/$binary.new"
  chmod +x "$TOOLS/$binary.new"
  mv "$TOOLS/$binary.new" "$TOOLS/$binary"
}

if ! "$TOOLS/kubectl" version --client >/dev/null 2>&1; then
  trixie_tool kubectl kubectl
  "$TOOLS/kubectl" version --client >/dev/null || die "$TOOLS/kubectl does not run"
fi
if ! "$TOOLS/promtool" --version >/dev/null 2>&1; then
  trixie_tool promtool promtool
  "$TOOLS/promtool" --version >/dev/null || die "$TOOLS/promtool does not run"
fi
want="kubernetes-validate==$KUBERNETES_VALIDATE cloudcoil==$CLOUDCOIL cloudcoil-models-prometheus-operator==$PROMETHEUS_OPERATOR_MODELS"
if [ "$(cat "$VENV/.installed" 2>/dev/null)" != "$want" ]; then
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  # shellcheck disable=SC2086
  "$VENV/bin/pip" install --quiet --disable-pip-version-check $want
  echo "$want" >"$VENV/.installed"
fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
failed=0
for layer in "${LAYERS[@]}"; do
  name=$(basename "$layer")
  if ! "$TOOLS/kubectl" kustomize "$layer" >"$out/$name.yaml" 2>"$out/$name.err"; then
    echo "check-k8s: FAILED to render $layer:" >&2
    cat "$out/$name.err" >&2
    failed=1
    continue
  fi
  for version in "${K8S_VERSIONS[@]}"; do
    # Strict: unknown fields are errors. Custom resources are only warned about here
    # (no schema); the step below checks them.
    if ! "$VENV/bin/kubernetes-validate" --strict --quiet --no-warn -k "$version" "$out/$name.yaml" >"$out/kv.log" 2>&1; then
      echo "check-k8s: $layer does not validate against Kubernetes $version:" >&2
      sed "s|$out/$name.yaml|$layer|" "$out/kv.log" >&2
      failed=1
    fi
  done
done

# Custom resources, the alert rules (extracted for promtool) and the API server's own
# checks, over every rendered object.
mkdir -p "$out/rules"
if ! "$VENV/bin/python" - "$out" "${LAYERS[@]}" <<'PY'
import json, re, sys
from pathlib import Path

import pydantic
import yaml
from cloudcoil.models.prometheus_operator import v1 as monitoring_v1

out = Path(sys.argv[1])
errors = []

def unknown_fields(given, known, path):
    """Keys of `given` that the validated model dropped (fields its schema lacks)."""
    found = []
    if isinstance(given, dict) and isinstance(known, dict):
        for key, value in given.items():
            if key not in known:
                found.append(f"{path}.{key}" if path else key)
            else:
                found += unknown_fields(value, known[key], f"{path}.{key}" if path else key)
    elif isinstance(given, list) and isinstance(known, list):
        for i, (a, b) in enumerate(zip(given, known)):
            found += unknown_fields(a, b, f"{path}[{i}]")
    return found

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
PORT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
QUANTITY = re.compile(r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))((?:[KMGTPE]i)|[numkMGTPE]|[eE][+-]?[0-9]+)?$")
SUFFIX = {"": 1, "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
          "P": 1e15, "E": 1e18, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
          "Pi": 2**50, "Ei": 2**60}

def quantity(text, where):
    """The value of a Kubernetes quantity (`500m`, `2Gi`, `1e3`), or None (an error)."""
    m = QUANTITY.match(str(text))
    if not m:
        errors.append(f"{where}: {text!r} is not a Kubernetes quantity")
        return None
    suffix = m.group(2) or ""
    scale = SUFFIX[suffix] if suffix in SUFFIX else 10 ** int(suffix[1:])
    return float(m.group(1)) * scale

def pod_spec(obj):
    spec = obj.get("spec", {})
    if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return spec.get("template", {}).get("spec", {})
    return None

for layer in sys.argv[2:]:
    docs = [d for d in yaml.safe_load_all((out / f"{Path(layer).name}.yaml").read_text()) if d]
    for obj in docs:
        what = f"{layer}: {obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        name = obj.get("metadata", {}).get("name", "")
        limit, pattern = (63, DNS_LABEL) if obj["kind"] in ("Service", "Namespace") else (253, DNS_SUBDOMAIN)
        if len(name) > limit or not pattern.match(name):
            errors.append(f"{what}: the name is not a valid DNS name for a {obj['kind']}")
        if obj["kind"] == "PrometheusRule":
            # For promtool: `spec` is a Prometheus rules file.
            rules = out / "rules" / f"{Path(layer).name}-{name}.yaml"
            rules.write_text(yaml.safe_dump(obj.get("spec")))
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            model = getattr(monitoring_v1, obj["kind"], None) if obj["apiVersion"] == "monitoring.coreos.com/v1" else None
            if model is None:
                errors.append(f"{what}: no model for {obj['apiVersion']} {obj['kind']}")
                continue
            try:
                parsed = model.model_validate(obj)
            except pydantic.ValidationError as err:
                for e in err.errors():
                    errors.append(f"{what}: {'.'.join(map(str, e['loc']))}: {e['msg']}")
                continue
            known = parsed.model_dump(by_alias=True, exclude_unset=True, mode="json")
            for field in unknown_fields(obj, known, ""):
                errors.append(f"{what}: unknown field {field}")
            continue
        if obj["kind"] == "ConfigMap":
            for key, value in (obj.get("data") or {}).items():
                if key.endswith(".json"):
                    try:
                        json.loads(value)
                    except ValueError as err:
                        errors.append(f"{what}: data.{key} is not JSON: {err}")
        spec = pod_spec(obj)
        if spec is None:
            continue
        for c in spec.get("initContainers", []) + spec.get("containers", []):
            cw = f"{what}: container {c.get('name')}"
            for p in c.get("ports", []):
                pn = p.get("name")
                if pn is not None and (len(pn) > 15 or not PORT_NAME.match(pn) or not re.search("[a-z]", pn)):
                    errors.append(f"{cw}: port name {pn!r} is not an IANA service name (15 chars at most)")
            res = c.get("resources", {})
            requests, limits = res.get("requests", {}), res.get("limits", {})
            req = {r: quantity(v, f"{cw}: resources.requests.{r}") for r, v in requests.items()}
            lim = {r: quantity(v, f"{cw}: resources.limits.{r}") for r, v in limits.items()}
            for r, v in req.items():
                if v is not None and lim.get(r) is not None and v > lim[r]:
                    errors.append(f"{cw}: resources.requests.{r} ({requests[r]}) is above its limit ({limits[r]})")

for e in errors:
    print(f"check-k8s: {e}", file=sys.stderr)
sys.exit(1 if errors else 0)
PY
then
  failed=1
fi
for rules in "$out"/rules/*.yaml; do
  [ -e "$rules" ] || continue
  if ! "$TOOLS/promtool" check rules "$rules" >"$out/promtool.log" 2>&1; then
    echo "check-k8s: promtool refuses the rules of $(basename "$rules" .yaml) (deploy/observability):" >&2
    cat "$out/promtool.log" >&2
    failed=1
  fi
done

if [ "$failed" != 0 ]; then
  die "the Kubernetes manifests have errors (above)"
fi
count=$(cat "$out"/*.yaml | grep -c '^kind:' || true)
echo "check-k8s: ${#LAYERS[@]} kustomizations rendered, $count objects valid (Kubernetes ${K8S_VERSIONS[*]}, strict; prometheus-operator models $PROMETHEUS_OPERATOR_MODELS; promtool)"

#!/usr/bin/env bash
# make chart-test: installs the chart into a local kwok cluster (hack/cluster.sh, a dedicated cluster
# so it never disturbs a development one: CHART_TEST_CLUSTER, default image-prewarmer-ct), deleting
# any cluster of that name first (a killed run's releases never fail the next) and at the end.
#   1. `ct install` installs the chart with each charts/image-prewarmer/ci/*-values.yaml (`--wait`),
#      runs `helm test` (a Job: one `run --once --dry-run` cycle), and uninstalls it (pre-delete
#      cleanup hook), all in a namespace that enforces the restricted Pod Security Standard. The kwok
#      nodes of testdata/kwok-nodes.yaml put a warmer pod on a tainted pool node for each ci file, so
#      `--wait` proves the warmer is admitted, scheduled and Ready. The Prometheus Operator's CRDs are
#      installed first, so the API server validates the ServiceMonitor and PrometheusRule too.
#   2. Every values-examples/*.yaml is installed as is into its own restricted namespace, tested and
#      uninstalled; nothing of the release may be left behind.
# Under kwok no container really runs: Jobs complete and pods become Ready through kwok's stages, so
# this proves that the objects are valid and admitted (schema, API validation, RBAC, Pod Security).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
here="$root/test/chart"
cluster=${CHART_TEST_CLUSTER:-image-prewarmer-ct}
chart="$root/charts/image-prewarmer"
log() { printf '[chart-test] %s\n' "$*" >&2; }

bin=$("$root/hack/tools/install.sh" helm ct kubectl)
export PATH="$bin:$PATH"
command -v yamllint >/dev/null 2>&1 || { log "yamllint is not installed (ct needs it): apt-get install -y yamllint"; exit 1; }

# One chart test per cluster name at a time: a second one would delete the first one's cluster
# (below, and in its exit trap). Taken before the trap is set, so that a refused run deletes nothing;
# the cluster's processes do not inherit it (8>&-), so a killed run's cluster does not hold it.
cache=${IMAGE_PREWARMER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/image-prewarmer}
mkdir -p "$cache"
exec 8>"$cache/chart-test-$cluster.lock"
flock -n 8 || { log "another chart test is using cluster $cluster (set CHART_TEST_CLUSTER to run one beside it)"; exit 1; }

down() {
  local rc=$?
  log "deleting cluster $cluster"
  "$root/hack/cluster.sh" down "$cluster" 8>&- || true
  exit "$rc"
}
trap down EXIT

# A fresh cluster each run: one left by a run that was killed (no trap) still holds its releases.
"$root/hack/cluster.sh" down "$cluster" >/dev/null 2>&1 8>&- || true
KUBECONFIG=$("$root/hack/cluster.sh" up "$cluster" 8>&-)
export KUBECONFIG
log "cluster $cluster is up (KUBECONFIG=$KUBECONFIG)"

kubectl apply -f "$here/testdata/kwok-nodes.yaml" >/dev/null
kubectl wait --for=condition=Ready node --all --timeout=60s >/dev/null

# The Prometheus Operator's own CRDs for the ServiceMonitor and PrometheusRule that ci files render:
# the API server checks those objects against the CRDs' schemas. From the operator's Go module (the
# module proxy and checksum database vouch for its content).
# shellcheck source=../../hack/tools/versions.env
source "$root/hack/tools/versions.env"
operator=$(cd "$root/hack/tools/prometheus" &&
  go mod download -json "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" |
  sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[[ -n $operator ]] || { log "downloading the Prometheus Operator $PROMETHEUS_OPERATOR_VERSION failed"; exit 1; }
for crd in servicemonitors prometheusrules; do
  kubectl apply --server-side -f "$operator/example/prometheus-operator-crd/monitoring.coreos.com_$crd.yaml" >/dev/null
done
kubectl wait --for=condition=Established crd/servicemonitors.monitoring.coreos.com crd/prometheusrules.monitoring.coreos.com --timeout=60s >/dev/null

restricted_ns() {
  kubectl create namespace "$1" >/dev/null
  kubectl label namespace "$1" >/dev/null \
    pod-security.kubernetes.io/enforce=restricted pod-security.kubernetes.io/enforce-version=latest \
    pod-security.kubernetes.io/warn=restricted
}

# 1. ct install, each ci/*-values.yaml, in a restricted namespace.
restricted_ns ct-restricted
(cd "$root" && ct install --config ct.yaml --all --namespace ct-restricted --release-label app.kubernetes.io/instance)
kubectl delete namespace ct-restricted --wait=false >/dev/null

# 2. values-examples/*.yaml, each as is.
leftovers() { # NAMESPACE RELEASE: the release's objects still present; fails if a list fails
  # (set -e does not apply inside the if that calls this: each list returns on its own failure,
  # so an unserved kind or an API error is not taken for "nothing left").
  kubectl get configmap,serviceaccount,role,rolebinding,daemonset,cronjob,deployment,service,poddisruptionbudget,servicemonitor,prometheusrule \
    -n "$1" -l "app.kubernetes.io/instance=$2" -o name || return
  kubectl get clusterrole,clusterrolebinding,flowschema -l "app.kubernetes.io/instance=$2" -o name || return
  kubectl get role,rolebinding -A -l "app.kubernetes.io/instance=$2" -o name || return
}
failed=()
for f in "$root"/values-examples/*.yaml; do
  name=$(basename "$f" .yaml)
  ns="example-$name"
  rel="ex-$name"
  left=""
  log "values-examples/$name.yaml: install, test, uninstall in namespace $ns"
  restricted_ns "$ns"
  if helm install "$rel" "$chart" -n "$ns" -f "$f" --wait --timeout 180s >/dev/null &&
    helm test "$rel" -n "$ns" --timeout 180s >/dev/null &&
    helm uninstall "$rel" -n "$ns" --wait --timeout 180s >/dev/null &&
    left=$(leftovers "$ns" "$rel") && [[ -z $left ]]; then
    log "values-examples/$name.yaml: ok"
  else
    log "values-examples/$name.yaml: FAILED ${left:+(left behind: $left)}"
    kubectl get all,events -n "$ns" >&2 || true
    failed+=("$name")
  fi
  kubectl delete namespace "$ns" --wait=false >/dev/null
done
if ((${#failed[@]} > 0)); then
  log "failed: ${failed[*]}"
  exit 1
fi
log "all ci values and values-examples installed, tested and uninstalled"

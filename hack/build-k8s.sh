#!/usr/bin/env bash
# Builds the Kubernetes test binaries (etcd, kube-apiserver,
# kube-controller-manager) from the Go module proxy and links them into
# bin/k8s/<version>/. Like setup-envtest, the binaries live in a per-user
# cache so a fresh clone on the same machine does not rebuild them.
#
# Usage: hack/build-k8s.sh [bin-dir]   (default: ./bin)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin_dir=${1:-$root/bin}
k8s_version=v1.37.2
etcd_version=v3.6.16
cache=${MESH_TOOLS_CACHE:-${XDG_DATA_HOME:-$HOME/.local/share}/mesh-operator}/k8s/$k8s_version
dest=$bin_dir/k8s/$k8s_version

mkdir -p "$cache" "$bin_dir/k8s"

build() { # name, module dir, package, ldflags
  local name=$1 dir=$2 pkg=$3 ldflags=$4
  if [ -x "$cache/$name" ]; then return 0; fi
  echo ">> building $name from the Go module proxy (first time only; kube binaries take ~10 min on 2 cores)"
  local start=$SECONDS
  (cd "$root/hack/tools/$dir" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w $ldflags" -o "$cache/$name.tmp" "$pkg")
  mv "$cache/$name.tmp" "$cache/$name"
  echo ">> built $name in $((SECONDS - start))s"
}

ver=k8s.io/component-base/version
major=${k8s_version#v}; major=${major%%.*}
minor=${k8s_version#v*.}; minor=${minor%%.*}
kube_ldflags="-X $ver.gitVersion=$k8s_version -X $ver.gitMajor=$major -X $ver.gitMinor=$minor -X $ver.gitTreeState=clean"

build etcd etcd . ""
build kube-apiserver kube ./cmd/kube-apiserver "$kube_ldflags"
build kube-controller-manager kube ./cmd/kube-controller-manager "$kube_ldflags"

# Link (not copy) so bin/ stays small; replace a stale link atomically.
ln -sfn "$cache" "$dest.tmp" && mv -T "$dest.tmp" "$dest"
"$dest/kube-apiserver" --version

#!/usr/bin/env bash
# Installs the pinned Go tools (controller-gen, helm) into bin/ from the Go
# module proxy. A second run finds them and does nothing.
#
# Usage: hack/build-tools.sh [bin-dir]   (default: ./bin)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin_dir=${1:-$root/bin}
mkdir -p "$bin_dir"

install() { # name, module path with version
  local name=$1 pkg=$2 stamp="$bin_dir/.$1.version"
  if [ -x "$bin_dir/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$pkg" ]; then return 0; fi
  echo ">> installing $name ($pkg)"
  GOBIN="$bin_dir" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" "$pkg"
  echo "$pkg" > "$stamp"
}

install controller-gen sigs.k8s.io/controller-tools/cmd/controller-gen@v0.23.0
install helm helm.sh/helm/v3/cmd/helm@v3.22.0

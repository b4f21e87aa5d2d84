#!/usr/bin/env bash
# Enforces the layering of DESIGN.md §3: nothing under engine/ imports a
# Kubernetes package, so the engine stays embeddable and testable alone.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d engine ] || exit 0
bad=$(go list -deps ./engine/... 2>/dev/null | grep -E '^(k8s\.io|sigs\.k8s\.io)/' || true)
if [ -n "$bad" ]; then
  echo "engine/ must not import Kubernetes packages; found:"
  echo "$bad"
  exit 1
fi

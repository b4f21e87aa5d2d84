#!/usr/bin/env bash
# demo.sh up|down — the whole product on one machine: a local Kubernetes
# control plane built from source, the process kubelet, the operator, and
# the sample MeshCluster `demo`. Used by `make demo` and `make demo-down`.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-$PWD/bin}
K8S_VERSION=${K8S_VERSION:-v1.37.2}
STATE=${LOCALCLUSTER_STATE:-$PWD/tmp/localcluster}
KUBECONFIG_PATH=$STATE/kubeconfig
SAMPLE=config/samples/mesh_v1alpha1_meshcluster.yaml
LC=$BIN/localcluster

build() {
	echo "==> building localcluster, manager and mesh-node into $BIN"
	go build -o "$LC" ./hack/localcluster
	go build -o "$BIN/manager" ./cmd/manager
	go build -o "$BIN/mesh-node" ./cmd/mesh-node
}

up() {
	build
	if [[ -f $STATE/localcluster.pid ]] && kill -0 "$(cat "$STATE/localcluster.pid")" 2>/dev/null; then
		echo "==> the local cluster already runs (state in $STATE): reusing it; make demo-down stops it"
	else
		echo "==> starting the local cluster and the operator (state and logs in $STATE)"
		"$LC" up --detach --state-dir="$STATE" --assets="$BIN/k8s/$K8S_VERSION" \
			--operator="$BIN/manager" --image="ghcr.io/purplerain/mesh-node=$BIN/mesh-node" \
			--restart-backoff=1s
	fi
	export KUBECONFIG=$KUBECONFIG_PATH
	local start end
	start=$(date +%s%N)
	kubectl apply -f "$SAMPLE"
	if ! kubectl wait meshcluster/demo --for=condition=Available --timeout=120s; then
		echo "MeshCluster demo did not become Available; logs in $STATE/logs (localcluster logs <pod>)" >&2
		kubectl get meshclusters,statefulsets,pods -o wide >&2 || true
		exit 1
	fi
	end=$(date +%s%N)
	echo "==> MeshCluster demo Available $(( (end - start) / 1000000 )) ms after kubectl apply"
	# TODO(issue 9): ingest a few thousand events with the SDK (needs a small
	# command around package client; the nodes serve the data API).
	echo
	kubectl get meshclusters,statefulsets,pods -o wide
	cat <<MSG

The local cluster runs in the background (pods are processes on 127.0.0.x).
  export KUBECONFIG=$KUBECONFIG_PATH
  kubectl get meshclusters,pods
  kubectl scale meshcluster/demo --replicas=5     # more nodes
  kubectl delete pod demo-0                       # watch it come back
  $LC logs demo-0   # a pod's log (also: kubelet, manager, kube-apiserver)
  $LC status
Stop everything with: make demo-down
MSG
}

down() {
	if [[ -x $LC ]]; then
		"$LC" down --state-dir="$STATE"
	else
		go run ./hack/localcluster down --state-dir="$STATE"
	fi
}

case ${1:-} in
up) up ;;
down) down ;;
*) echo "usage: $0 up|down" >&2; exit 2 ;;
esac

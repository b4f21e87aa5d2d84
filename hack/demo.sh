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

MESHCTL=$BIN/meshctl
EVENTS=${DEMO_EVENTS:-5000}

build() {
	echo "==> building localcluster, manager, mesh-node and meshctl into $BIN"
	go build -o "$LC" ./hack/localcluster
	go build -o "$BIN/manager" ./cmd/manager
	go build -o "$BIN/mesh-node" ./cmd/mesh-node
	go build -o "$MESHCTL" ./cmd/meshctl
}

# ingest writes $EVENTS events through the SDK (meshctl) and reads them
# back, so the demo shows the data path and not only the control plane.
ingest() {
	local addrs creds=""
	# Pods without an IP yet (one restarting) are left out: an empty host
	# would name this machine.
	addrs=$(kubectl get pods -l app.kubernetes.io/instance=demo \
		-o jsonpath='{range .items[*]}{.status.podIP}{"\n"}{end}' |
		awk 'NF { printf "%s%s:9441", sep, $1; sep = "," }')
	MESHCTL_ADDRESSES=$addrs
	# The nodes authenticate the data API with tokens delegated from the
	# cluster's data key; the operator keeps it in the Secret demo-data-key.
	if (umask 077 && kubectl get secret demo-data-key -o json >"$STATE/demo-data-key.json.tmp" 2>/dev/null); then
		mv "$STATE/demo-data-key.json.tmp" "$STATE/demo-data-key.json"
		creds=$STATE/demo-data-key.json
	else
		rm -f "$STATE/demo-data-key.json.tmp" "$STATE/demo-data-key.json"
	fi
	MESHCTL_CREDENTIALS=$creds
	export MESHCTL_ADDRESSES MESHCTL_CREDENTIALS
	echo "==> ingesting $EVENTS events with the SDK (meshctl ingest, nodes $addrs)"
	"$MESHCTL" ingest --count="$EVENTS" --keys=200 --key-prefix=demo- --batch=250 --timeout=60s || return 1
	echo "==> reading them back (meshctl poll)"
	"$MESHCTL" poll --quiet --timeout=60s || return 1
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
	# Warm kubectl's discovery cache first, so the time below is the
	# cluster's and not kubectl's first start against a new API server.
	kubectl get meshclusters >/dev/null 2>&1 || true
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
	if ! ingest; then
		echo "ingest through the SDK failed; logs in $STATE/logs ($LC logs demo-0, $LC logs manager)" >&2
		exit 1
	fi
	echo
	kubectl get meshclusters,statefulsets,pods -o wide
	# Paths as the user types them from the repository root.
	local lc=${LC#"$PWD"/} meshctl=${MESHCTL#"$PWD"/}
	cmd() { printf '  %-46s # %s\n' "$1" "$2"; }
	echo
	echo "The local cluster runs in the background (pods are processes on 127.0.0.x)."
	echo "  export KUBECONFIG=$KUBECONFIG_PATH"
	cmd "kubectl get meshclusters,pods" "status, phase, pods"
	cmd "kubectl scale meshcluster/demo --replicas=5" "more nodes; shards rebalance onto them"
	cmd "kubectl delete pod demo-0" "a standby takes over its shards"
	cmd "$lc logs demo-0" "a pod's log (also: kubelet, manager, ...)"
	cmd "$lc status" "what runs"
	echo "Events through the SDK (meshctl):"
	echo "  export MESHCTL_ADDRESSES=$MESHCTL_ADDRESSES"
	if [[ -n $MESHCTL_CREDENTIALS ]]; then
		echo "  export MESHCTL_CREDENTIALS=$MESHCTL_CREDENTIALS  # the data key (Secret demo-data-key)"
	fi
	cmd "$meshctl topology" "members and shard placement"
	cmd "$meshctl ingest --count=1000 --keys=10" "more events"
	cmd "$meshctl poll --shard=0 --limit=10" "read some back (--from=<cursor> resumes)"
	echo "Stop everything with: make demo-down"
}

down() {
	rm -f "$STATE/demo-data-key.json" # the data key of a cluster that is going away
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

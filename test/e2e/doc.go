// Package e2e is the end-to-end suite: the real chain manifest → API
// server → operator → StatefulSet controller → process kubelet → mesh-node
// processes, on a local cluster started by the suite (package
// hack/localcluster/cluster) with the operator running as a process.
//
// Run it with `make test-e2e`. Each run keeps its state and logs in
// $E2E_ARTIFACTS (default <repo>/tmp/e2e/<time>); a passing run keeps
// only logs/ and timings.txt there, a failing or interrupted one keeps
// everything (kubeconfig, binaries, pod directories) and prints where it
// is. Timings (time to Available, pod recreation, restart after SIGKILL)
// are printed and written to timings.txt in that directory.
package e2e

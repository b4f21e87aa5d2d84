// Package install tests how users install the operator, for real: the Helm
// chart in charts/mesh-operator and the kustomize base in config/default.
//
// What it pins:
//   - `helm template` output for the main value combinations matches the
//     golden files in testdata/golden (regenerate with `go test
//     ./test/install -update`), and bad values fail with a message;
//   - the chart's CRD and RBAC rules are exactly the generated ones in
//     config/crd/bases and config/rbac/role.yaml (`make chart-sync`);
//   - `helm install`, `helm upgrade` and `kubectl apply -k config/default`
//     into a real kube-apiserver (envtest, built from source) create an
//     operator whose ServiceAccount is enough for everything it does: the
//     manager binary runs with a token of that ServiceAccount, reconciles
//     samples into their children, and the API server's audit log shows
//     no request of it was denied;
//   - on the local cluster of issue 9 (hack/localcluster: a process
//     kubelet runs the node pods), a chart install brings a sample to
//     Available with every pod running.
//
// The operator runs as a local process with the Deployment's arguments and
// the ServiceAccount's token rather than as the Deployment's pod: envtest
// has no kubelet, and the local cluster's process kubelet does not mount
// ServiceAccount tokens yet.
package install

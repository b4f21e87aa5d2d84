// Package cluster starts a local Kubernetes control plane on one machine:
// etcd, kube-apiserver (with service-account signing keys) and
// kube-controller-manager built from source, plus the process kubelet of
// package kubelet as its only node. It writes an admin kubeconfig
// (system:masters) that kubectl can use.
//
// Layout of the state directory:
//
//	kubeconfig          admin kubeconfig
//	ca.crt              the API server's CA
//	logs/               etcd.log, kube-apiserver.log, kube-controller-manager.log,
//	                    kubelet.log and <namespace>_<pod>_<container>.log per pod
//	kubelet/pods/<uid>  per-pod volumes (removed with the pod)
//	kubelet/pvcs/<ns>/<claim>_<uid>  PVC directories (removed with their claim)
//	pids                pids of the processes started, for `down` after a crash
//
// Invariants: Start refuses when a fixed port is taken, before starting
// anything; Stop stops the kubelet (and so every pod process) first, then
// the controller manager, the API server and etcd, and always leaves the
// logs directory in place. Every child process gets a parent-death signal.
package cluster

// Package kubelet is a process kubelet for a local Kubernetes control plane
// without a container runtime: it registers one Node, binds pending pods to
// it (it is also the scheduler), and runs each container's command as a
// local process.
//
// What a pod gets:
//   - Its own loopback address 127.0.0.x as the pod IP, so every pod can
//     listen on the same ports. An address is only handed out when every
//     declared container port is free on it.
//   - The image mapped to a locally built binary (ImageMap): the binary
//     replaces the image's entrypoint, so command[0] is dropped and the rest
//     of command plus args become its arguments.
//   - Environment resolved as the kubelet does: envFrom, then env, with
//     $(VAR) expansion, downward API fields and resource fields, ConfigMap
//     and Secret keys. The host environment is not inherited (PATH and HOME
//     are set).
//   - Volumes as directories: ConfigMap, Secret, downward API and projected
//     volumes are materialised as files (atomically, through a ..data
//     symlink, and refreshed when the object changes); downward API files
//     take fieldRef and resourceFieldRef; a projected serviceAccountToken
//     is a token of the pod's service account from the API server's
//     TokenRequest API, bound to the pod and renewed at 80% of its life
//     (tokens.go); the cluster CA comes from the kube-root-ca.crt
//     ConfigMap like any ConfigMap projection; emptyDir is a
//     directory of the pod, removed with it; a PVC is a directory named after
//     the claim and its UID (ClaimDir) that survives the pod and is removed
//     when the claim is deleted. With Config.ProvisionVolumes, a
//     PersistentVolume pre-bound to each unbound claim makes it Bound.
//   - Mount paths rewritten: absolute paths such as /etc/mesh cannot be
//     created for every pod, so each mount path prefix in the container's
//     command, args and env values is replaced by the materialised
//     directory (longest mount path first, only at path boundaries). With
//     Config.RewriteConfigMapPaths, the same rewrite applies to the contents
//     of materialised ConfigMap files, so configuration files that name
//     mounted paths point at the right directories. ReadOnly mounts are not
//     enforced.
//   - Probes (HTTP, TCP, exec on the host) against the process, reported in
//     the pod status (Ready, ContainersReady, containerStatuses); a liveness
//     failure restarts the container.
//   - Restarts according to restartPolicy with exponential backoff (reset
//     after a container ran for BackoffReset).
//   - On delete: SIGTERM to the process group, SIGKILL after the grace
//     period, then the pod object is removed (grace period zero).
//   - Logs: stdout and stderr of every run, appended to
//     <LogDir>/<namespace>_<pod>_<container>.log, kept after the pod goes.
//
// Not supported (a pod using them gets a clear status message or the field
// is ignored, as documented on the field's handler): init containers,
// ephemeral containers, gRPC probes, clusterTrustBundle and podCertificate
// projections, affinity and taints (the single node takes every pod whose nodeSelector
// matches), resource limits (reported, not enforced), service environment
// variables.
//
// Invariants: one worker per pod UID; a pod's processes are stopped before
// its object is removed from the API and before its address is released;
// every process is started in its own process group with a parent-death
// signal, so a kubelet that dies takes its pods with it.
package kubelet

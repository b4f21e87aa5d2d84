package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// PausedAnnotation pauses a MeshCluster like spec.paused does: the operator
// keeps status fresh but changes nothing.
const PausedAnnotation = "mesh.purplerain.io/paused"

// RotateCredentialsAnnotation requests a rotation of the cluster's
// credentials: set it to a new value (a timestamp, a ticket number) and the
// operator rotates once per distinct value, recording the value it handled
// in status.credentials.rotation.
const RotateCredentialsAnnotation = "mesh.purplerain.io/rotate-credentials"

// DefaultImage is the mesh-node image used when spec.image is empty.
const DefaultImage = "ghcr.io/purplerain/mesh-node:v0.1.0"

// MeshClusterSpec declares a mesh cluster: its active and standby nodes, its
// shards and how the operator moves them.
//
// +kubebuilder:validation:XValidation:rule="!has(self.standby) || !has(self.standby.ackPolicy) || self.standby.ackPolicy != 'Standby' || (has(self.standby.replicas) && self.standby.replicas >= 1)",message="standby.replicas must be at least 1 when standby.ackPolicy is Standby: no standby could acknowledge writes"
// +kubebuilder:validation:XValidation:rule="!has(self.daemons) || !has(self.shards) || !has(self.shards.count) || self.daemons.all(d, !has(d.shards) || !has(d.shards.ids) || d.shards.ids.all(s, s < self.shards.count))",message="daemons[].shards.ids must name base shards, below shards.count"
type MeshClusterSpec struct {
	// Nodes is the number of active nodes, which own shards and accept
	// writes. Lowering it starts a safe scale-down: the leaving nodes' shards
	// and daemons move away before any pod is removed.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	// +kubebuilder:default=3
	// +optional
	Nodes int32 `json:"nodes,omitempty"`

	// Standby configures standby nodes, which follow shards and are promoted
	// when an active node fails.
	// +kubebuilder:default={}
	// +optional
	Standby StandbySpec `json:"standby"`

	// Shards configures the cluster's shards, the unit of ordering, storage,
	// ownership and migration.
	// +kubebuilder:default={}
	// +optional
	Shards ShardsSpec `json:"shards"`

	// Retention bounds each shard's log. Policies combine: the one that drops
	// the most wins. Unset means unbounded.
	// +optional
	Retention RetentionSpec `json:"retention,omitempty"`

	// Migration configures how shards and daemons move between nodes.
	// +kubebuilder:default={}
	// +optional
	Migration MigrationSpec `json:"migration"`

	// Storage configures where nodes keep shard logs.
	// +kubebuilder:default={}
	// +optional
	Storage StorageSpec `json:"storage"`

	// Adapter optionally mirrors every shard to an external system.
	// +optional
	Adapter *AdapterSpec `json:"adapter,omitempty"`

	// Daemons are stateful event processors bound to shards; they move with
	// their shard.
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=64
	// +optional
	Daemons []DaemonSpec `json:"daemons,omitempty"`

	// Image is the mesh-node container image. Changing it rolls the pods one
	// at a time.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:default="ghcr.io/purplerain/mesh-node:v0.1.0"
	// +optional
	Image string `json:"image,omitempty"`

	// ImagePullPolicy is the pull policy of the mesh-node container.
	// +kubebuilder:validation:Enum=Always;IfNotPresent;Never
	// +kubebuilder:default=IfNotPresent
	// +optional
	ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy,omitempty"`

	// Resources are the mesh-node container's compute resources.
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`

	// PodTemplate adds labels, annotations and scheduling settings to every
	// node pod.
	// +optional
	PodTemplate PodTemplateOverrides `json:"podTemplate,omitempty"`

	// Rules are behaviour rules the nodes evaluate at ingest: an event that
	// breaks one is refused and the client is told the rule's name. A change
	// applies without restarting pods.
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=256
	// +optional
	Rules []RuleSpec `json:"rules,omitempty"`

	// Subnets places nodes in the 4-level subnet hierarchy
	// (region.fleet.vehicle.subsystem) from their pod labels.
	// +optional
	Subnets *SubnetsSpec `json:"subnets,omitempty"`

	// Paused stops the operator from changing anything; it keeps status
	// fresh. The annotation mesh.purplerain.io/paused="true" does the same.
	// +optional
	Paused bool `json:"paused,omitempty"`
}

// RuleSpec is one behaviour rule, in the syntax of the engine's rules
// package: When selects the events the rule applies to, Require must hold
// for each of them, RateLimit caps them per key and window. A rule needs
// Require or RateLimit. Conditions are checked by the operator (they nest,
// which a CRD schema cannot express); a bad one sets RulesValid=False and
// the nodes keep the last valid rules.
// +kubebuilder:validation:XValidation:rule="has(self.require) || has(self.rateLimit)",message="a rule needs require or rateLimit"
type RuleSpec struct {
	// Name identifies the rule; clients see it when an event is refused.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// When is a condition selecting the events the rule applies to; unset
	// means every event. Example: {"field": "kind", "op": "eq", "value":
	// "telemetry"}; combine with {"and": [...]}, {"or": [...]}, {"not": ...}.
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Type=object
	// +optional
	When *apiextensionsv1.JSON `json:"when,omitempty"`

	// Require is a condition every selected event must meet.
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Type=object
	// +optional
	Require *apiextensionsv1.JSON `json:"require,omitempty"`

	// RateLimit admits at most max selected events per value of the key
	// field per window.
	// +optional
	RateLimit *RateLimitSpec `json:"rateLimit,omitempty"`
}

// RateLimitSpec caps selected events per key and fixed window.
type RateLimitSpec struct {
	// Key is the field path whose value gets its own budget; empty means
	// one budget for all events.
	// +kubebuilder:validation:MaxLength=253
	// +optional
	Key string `json:"key,omitempty"`
	// Max is the number of events admitted per window.
	// +kubebuilder:validation:Minimum=1
	Max int64 `json:"max"`
	// Window is the fixed window, e.g. 1s.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	Window metav1.Duration `json:"window"`
}

// SubnetsSpec assigns nodes to subnets from their pod labels and says which
// subnets a gateway exports each channel to.
type SubnetsSpec struct {
	// Policy maps pod label values onto subnet levels, applied in order.
	// +kubebuilder:validation:MaxItems=4
	// +optional
	Policy []SubnetRule `json:"policy,omitempty"`
	// Exports lists, per channel, the subnets (e.g. "3.7") that exported
	// traffic may reach.
	// +kubebuilder:validation:MaxProperties=256
	// +optional
	Exports map[string][]string `json:"exports,omitempty"`
}

// SubnetRule maps the values of one pod label onto one subnet level.
type SubnetRule struct {
	// Label is the pod label read.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=317
	Label string `json:"label"`
	// Level is 0 (region), 1 (fleet), 2 (vehicle) or 3 (subsystem).
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=3
	Level int32 `json:"level"`
	// Values maps label values to level values 1..255.
	// +kubebuilder:validation:MinProperties=1
	// +kubebuilder:validation:MaxProperties=255
	Values map[string]int32 `json:"values"`
}

// AckPolicy says when an ingest is acknowledged.
// +kubebuilder:validation:Enum=Leader;Standby
type AckPolicy string

const (
	// AckLeader acknowledges once the shard's owner appended the event.
	AckLeader AckPolicy = "Leader"
	// AckStandby acknowledges once a standby also has the event, so a
	// failover loses nothing acknowledged.
	AckStandby AckPolicy = "Standby"
)

// StandbySpec configures standby nodes and failover.
type StandbySpec struct {
	// Replicas is the number of standby nodes.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	// +kubebuilder:default=1
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`

	// FailoverAfter is how long an active node may be not ready before a
	// standby is promoted to own its shards.
	// +kubebuilder:default="3s"
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	FailoverAfter metav1.Duration `json:"failoverAfter,omitzero"`

	// LeaseDuration is how long an owner accepts writes without a fresh
	// topology push. The operator waits a lease out before promoting, so two
	// owners never accept writes for one shard.
	// +kubebuilder:default="2s"
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	LeaseDuration metav1.Duration `json:"leaseDuration,omitzero"`

	// AckPolicy says when an ingest is acknowledged: Leader (owner appended)
	// or Standby (a standby also has it; needs replicas >= 1).
	// +kubebuilder:default=Leader
	// +optional
	AckPolicy AckPolicy `json:"ackPolicy,omitempty"`
}

// ShardsSpec configures the cluster's shards.
// +kubebuilder:validation:XValidation:rule="!has(self.autoscale) || !has(self.autoscale.enabled) || !self.autoscale.enabled || !has(self.autoscale.maxShards) || !has(self.count) || self.autoscale.maxShards >= self.count",message="shards.autoscale.maxShards must be at least shards.count"
type ShardsSpec struct {
	// Count is the number of base shards; keyed events hash onto them. It is
	// immutable: changing it would re-route keys and break per-key order.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="shards.count is immutable: changing it would re-route keys; create a new cluster instead"
	// +kubebuilder:default=8
	// +optional
	Count int32 `json:"count,omitempty"`

	// Autoscale adds shards for keyless traffic under load and drains them
	// when idle. Base shards are never removed.
	// +optional
	Autoscale *AutoscaleSpec `json:"autoscale,omitempty"`
}

// AutoscaleSpec is the shard scaling policy, evaluated by the operator on the
// shard metrics the nodes report.
type AutoscaleSpec struct {
	// Enabled turns shard autoscaling on.
	// +optional
	Enabled bool `json:"enabled,omitempty"`

	// MaxShards caps base plus added shards.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +kubebuilder:default=64
	// +optional
	MaxShards int32 `json:"maxShards,omitempty"`

	// FillRatioThresholdPercent: a shard whose ring buffer is fuller than
	// this is overloaded.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	// +kubebuilder:default=70
	// +optional
	FillRatioThresholdPercent int32 `json:"fillRatioThresholdPercent,omitempty"`

	// UnderutilizedThresholdPercent: an added shard whose fill ratio stays
	// below this for scaleDownDelay is drained.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	// +kubebuilder:default=10
	// +optional
	UnderutilizedThresholdPercent *int32 `json:"underutilizedThresholdPercent,omitempty"`

	// PushLatencyThreshold: a shard whose push latency exceeds this is
	// overloaded.
	// +kubebuilder:default="5ms"
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	PushLatencyThreshold metav1.Duration `json:"pushLatencyThreshold,omitzero"`

	// EventRateThreshold: a shard receiving at least this many events per
	// second (averaged over metricsWindow) is overloaded. An added shard is
	// idle only while its rate also stays below underutilizedThresholdPercent
	// of this. Unset or 0 disables the signal.
	// +kubebuilder:validation:Minimum=0
	// +optional
	EventRateThreshold int64 `json:"eventRateThreshold,omitempty"`

	// FlushLatencyThreshold: a shard whose flush latency exceeds this is
	// overloaded.
	// +kubebuilder:default="50ms"
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	FlushLatencyThreshold metav1.Duration `json:"flushLatencyThreshold,omitzero"`

	// MetricsWindow is the window over which shard metrics are averaged.
	// +kubebuilder:default="1m"
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	MetricsWindow metav1.Duration `json:"metricsWindow,omitzero"`

	// Cooldown is the minimum time between two shard-count changes.
	// +kubebuilder:default="1m"
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	Cooldown metav1.Duration `json:"cooldown,omitzero"`

	// ScaleDownDelay is how long an added shard must stay idle before it is
	// drained.
	// +kubebuilder:default="5m"
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	ScaleDownDelay metav1.Duration `json:"scaleDownDelay,omitzero"`
}

// RetentionSpec bounds each shard's log.
type RetentionSpec struct {
	// MaxEvents keeps at most this many events per shard.
	// +kubebuilder:validation:Minimum=1
	// +optional
	MaxEvents *int64 `json:"maxEvents,omitempty"`

	// MaxBytes keeps at most this many bytes (index and payload) per shard.
	// +optional
	MaxBytes *resource.Quantity `json:"maxBytes,omitempty"`

	// MaxAge drops events older than this; an event exactly at the cutoff is
	// kept.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	MaxAge *metav1.Duration `json:"maxAge,omitempty"`
}

// MigrationStrategy is how a shard's daemons move.
// +kubebuilder:validation:Enum=SnapshotReplay
type MigrationStrategy string

// MigrationSnapshotReplay moves daemon state by snapshot, then replays the
// events that arrived meanwhile.
const MigrationSnapshotReplay MigrationStrategy = "SnapshotReplay"

// OnTimeout is what happens to a migration that exceeds its timeout.
// +kubebuilder:validation:Enum=Abort;Retry
type OnTimeout string

const (
	// OnTimeoutAbort aborts the move; the source stays the owner.
	OnTimeoutAbort OnTimeout = "Abort"
	// OnTimeoutRetry aborts and starts the move again.
	OnTimeoutRetry OnTimeout = "Retry"
)

// MigrationSpec configures shard moves.
type MigrationSpec struct {
	// Strategy is how daemons move with their shard.
	// +kubebuilder:default=SnapshotReplay
	// +optional
	Strategy MigrationStrategy `json:"strategy,omitempty"`

	// MaxConcurrent is how many shard moves may run at once.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=64
	// +kubebuilder:default=1
	// +optional
	MaxConcurrent int32 `json:"maxConcurrent,omitempty"`

	// Timeout bounds one shard move.
	// +kubebuilder:default="5m"
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	Timeout metav1.Duration `json:"timeout,omitzero"`

	// OnTimeout says what happens to a move that exceeds Timeout.
	// +kubebuilder:default=Abort
	// +optional
	OnTimeout OnTimeout `json:"onTimeout,omitempty"`
}

// StorageMode is where a node keeps shard logs.
// +kubebuilder:validation:Enum=Memory;Disk
type StorageMode string

const (
	// StorageMemory keeps logs in memory; standbys are the only copy.
	StorageMemory StorageMode = "Memory"
	// StorageDisk keeps logs in segment files on a PersistentVolumeClaim.
	StorageDisk StorageMode = "Disk"
)

// FsyncPolicy is when disk logs are synced.
// +kubebuilder:validation:Enum=Never;EveryN;Interval
type FsyncPolicy string

const (
	// FsyncNever leaves syncing to the operating system.
	FsyncNever FsyncPolicy = "Never"
	// FsyncEveryN syncs after every N appends.
	FsyncEveryN FsyncPolicy = "EveryN"
	// FsyncInterval syncs at a fixed interval.
	FsyncInterval FsyncPolicy = "Interval"
)

// PVCRetention is what happens to data PVCs when nodes or the cluster go.
// +kubebuilder:validation:Enum=Retain;Delete
type PVCRetention string

const (
	// PVCRetain keeps data PVCs.
	PVCRetain PVCRetention = "Retain"
	// PVCDelete deletes data PVCs once their pods are gone.
	PVCDelete PVCRetention = "Delete"
)

// StorageSpec configures where nodes keep shard logs.
// +kubebuilder:validation:XValidation:rule="(has(self.mode) ? self.mode : 'Memory') == (has(oldSelf.mode) ? oldSelf.mode : 'Memory')",message="storage.mode is immutable: switching between Memory and Disk would lose data"
// +kubebuilder:validation:XValidation:rule="!has(self.mode) || self.mode != 'Disk' || has(self.size)",message="storage.size is required when storage.mode is Disk"
type StorageSpec struct {
	// Mode is Memory or Disk. Immutable.
	// +kubebuilder:default=Memory
	// +optional
	Mode StorageMode `json:"mode,omitempty"`

	// Size is each node's data volume size (Disk mode).
	// +optional
	Size *resource.Quantity `json:"size,omitempty"`

	// StorageClassName is the data volumes' storage class (Disk mode).
	// +optional
	StorageClassName *string `json:"storageClassName,omitempty"`

	// Fsync is when disk logs are synced.
	// +kubebuilder:default={}
	// +optional
	Fsync FsyncSpec `json:"fsync"`

	// PVCRetention says whether data PVCs are kept or deleted when their
	// nodes are removed by a scale-down or the cluster is deleted.
	// +kubebuilder:default=Retain
	// +optional
	PVCRetention PVCRetention `json:"pvcRetention,omitempty"`
}

// FsyncSpec is when disk logs are synced.
// +kubebuilder:validation:XValidation:rule="!has(self.policy) || self.policy != 'EveryN' || has(self.everyN)",message="storage.fsync.everyN is required when storage.fsync.policy is EveryN"
// +kubebuilder:validation:XValidation:rule="!has(self.policy) || self.policy != 'Interval' || has(self.interval)",message="storage.fsync.interval is required when storage.fsync.policy is Interval"
type FsyncSpec struct {
	// Policy is Never, EveryN or Interval.
	// +kubebuilder:default=Never
	// +optional
	Policy FsyncPolicy `json:"policy,omitempty"`

	// EveryN syncs after this many appends (policy EveryN).
	// +kubebuilder:validation:Minimum=1
	// +optional
	EveryN *int32 `json:"everyN,omitempty"`

	// Interval syncs at this interval (policy Interval).
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	Interval *metav1.Duration `json:"interval,omitempty"`
}

// AdapterType is the external system shards are mirrored to.
// +kubebuilder:validation:Enum=None;JetStream;Redis
type AdapterType string

const (
	// AdapterNone mirrors nothing.
	AdapterNone AdapterType = "None"
	// AdapterJetStream mirrors each shard to a NATS JetStream stream.
	AdapterJetStream AdapterType = "JetStream"
	// AdapterRedis mirrors each shard to a Redis stream.
	AdapterRedis AdapterType = "Redis"
)

// AdapterSpec mirrors every shard to an external system.
// +kubebuilder:validation:XValidation:rule="!has(self.type) || self.type == 'None' || has(self.url)",message="adapter.url is required unless adapter.type is None"
// +kubebuilder:validation:XValidation:rule="!has(self.type) || self.type != 'JetStream' || !has(self.url) || self.url.startsWith('nats://') || self.url.startsWith('tls://')",message="adapter.url must start with nats:// or tls:// for JetStream"
// +kubebuilder:validation:XValidation:rule="!has(self.type) || self.type != 'Redis' || !has(self.url) || self.url.startsWith('redis://') || self.url.startsWith('rediss://')",message="adapter.url must start with redis:// or rediss:// for Redis"
type AdapterSpec struct {
	// Type is None, JetStream or Redis.
	// +kubebuilder:default=None
	// +optional
	Type AdapterType `json:"type,omitempty"`

	// URL is the server address, e.g. nats://nats:4222 or redis://redis:6379.
	// +kubebuilder:validation:MaxLength=1024
	// +optional
	URL string `json:"url,omitempty"`

	// SecretRef names a Secret in the cluster's namespace with credentials
	// (keys "username" and "password", or "token").
	// +optional
	SecretRef *corev1.LocalObjectReference `json:"secretRef,omitempty"`

	// Prefix names the streams: <prefix>-<shard>. Defaults to the cluster
	// name.
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9_-]*$`
	// +kubebuilder:validation:MaxLength=64
	// +optional
	Prefix string `json:"prefix,omitempty"`
}

// DaemonKind is a built-in daemon kind.
// +kubebuilder:validation:Enum=counter;sum;tasks
type DaemonKind string

const (
	// DaemonCounter counts events per key.
	DaemonCounter DaemonKind = "counter"
	// DaemonSum sums a numeric field per key over a tumbling window.
	DaemonSum DaemonKind = "sum"
	// DaemonTasks folds task create/update/delete events.
	DaemonTasks DaemonKind = "tasks"
)

// DaemonSpec declares a daemon on a set of shards.
type DaemonSpec struct {
	// Name identifies the daemon within the cluster.
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`

	// Kind is the built-in daemon kind: counter, sum or tasks.
	Kind DaemonKind `json:"kind"`

	// Shards selects the shards the daemon runs on; unset means all base
	// shards.
	// +optional
	Shards *ShardSelector `json:"shards,omitempty"`

	// Config is the daemon's kind-specific configuration (for sum: "field"
	// and "window").
	// +kubebuilder:validation:MaxProperties=32
	// +optional
	Config map[string]string `json:"config,omitempty"`
}

// ShardSelector selects shards by id.
type ShardSelector struct {
	// IDs are base shard ids.
	// +listType=set
	// +kubebuilder:validation:MaxItems=1024
	// +kubebuilder:validation:items:Minimum=0
	// +optional
	IDs []int32 `json:"ids,omitempty"`
}

// PodTemplateOverrides adds metadata and scheduling settings to node pods.
type PodTemplateOverrides struct {
	// Labels are added to every node pod.
	// +optional
	Labels map[string]string `json:"labels,omitempty"`

	// Annotations are added to every node pod.
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`

	// NodeSelector constrains node pods to matching Kubernetes nodes.
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`

	// Tolerations of node pods.
	// +optional
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`

	// Affinity of node pods.
	// +optional
	Affinity *corev1.Affinity `json:"affinity,omitempty"`

	// TopologySpreadConstraints of node pods.
	// +optional
	TopologySpreadConstraints []corev1.TopologySpreadConstraint `json:"topologySpreadConstraints,omitempty"`

	// PriorityClassName of node pods.
	// +optional
	PriorityClassName string `json:"priorityClassName,omitempty"`

	// TerminationGracePeriodSeconds bounds a node's drain on shutdown.
	// +kubebuilder:validation:Minimum=1
	// +optional
	TerminationGracePeriodSeconds *int64 `json:"terminationGracePeriodSeconds,omitempty"`
}

// Phase summarises what the cluster is doing.
// +kubebuilder:validation:Enum=Pending;Creating;Running;Scaling;Updating;FailingOver;Degraded;Paused;Deleting
type Phase string

// Phases of a MeshCluster.
const (
	PhasePending     Phase = "Pending"
	PhaseCreating    Phase = "Creating"
	PhaseRunning     Phase = "Running"
	PhaseScaling     Phase = "Scaling"
	PhaseUpdating    Phase = "Updating"
	PhaseFailingOver Phase = "FailingOver"
	PhaseDegraded    Phase = "Degraded"
	PhasePaused      Phase = "Paused"
	PhaseDeleting    Phase = "Deleting"
)

// Condition types.
const (
	// ConditionAvailable: every shard has a ready owner.
	ConditionAvailable = "Available"
	// ConditionProgressing: the operator is changing the cluster.
	ConditionProgressing = "Progressing"
	// ConditionDegraded: something is wrong that the operator cannot fix
	// alone, or has not fixed yet.
	ConditionDegraded = "Degraded"
	// ConditionScaleDownBlocked: a requested scale-down is not executed;
	// the message says why.
	ConditionScaleDownBlocked = "ScaleDownBlocked"
	// ConditionRulesValid: spec.rules compiled; when False the message
	// names the bad rule and the nodes keep the last valid rules.
	ConditionRulesValid = "RulesValid"
)

// Role is a node's role in the topology.
// +kubebuilder:validation:Enum=active;standby
type Role string

const (
	// RoleActive nodes own shards.
	RoleActive Role = "active"
	// RoleStandby nodes follow shards and own none.
	RoleStandby Role = "standby"
)

// MemberStatus is one node as the operator sees it.
type MemberStatus struct {
	// Name is the pod name.
	Name string `json:"name"`
	// Address is the node's pod IP; its admin, data and wire ports are
	// fixed (9440, 9441, 9442).
	// +optional
	Address string `json:"address,omitempty"`
	// Role is active or standby.
	Role Role `json:"role"`
	// Ready says the pod is ready.
	Ready bool `json:"ready"`
	// Leaving marks a node being emptied by a scale-down.
	// +optional
	Leaving bool `json:"leaving,omitempty"`
	// Shards is the number of shards the node owns.
	// +optional
	Shards int32 `json:"shards,omitempty"`
	// Lag is the largest replication lag, in events, over the shards the
	// node follows.
	// +optional
	Lag int64 `json:"lag,omitempty"`
	// Revision is the StatefulSet revision the pod runs.
	// +optional
	Revision string `json:"revision,omitempty"`
	// Subnet is the node's subnet as it reports it (e.g. "3.7": region 3,
	// fleet 7; unset levels are left out).
	// +optional
	Subnet string `json:"subnet,omitempty"`
}

// ShardStatus is one shard's placement.
type ShardStatus struct {
	// ID is the shard id.
	ID int32 `json:"id"`
	// Owner is the active node that accepts writes.
	// +optional
	Owner string `json:"owner,omitempty"`
	// Followers replicate the shard's log.
	// +optional
	Followers []string `json:"followers,omitempty"`
	// Draining marks an added shard being drained by autoscaling.
	// +optional
	Draining bool `json:"draining,omitempty"`
	// Fenced marks a shard whose owner refuses writes while a handoff
	// lets the new owner catch up.
	// +optional
	Fenced bool `json:"fenced,omitempty"`
	// IdleSince is when an added shard was first seen underutilised
	// (autoscaling drains it after scaleDownDelay).
	// +optional
	IdleSince *metav1.Time `json:"idleSince,omitempty"`
}

// AutoscaleStatus is the shard autoscaler's record.
type AutoscaleStatus struct {
	// LastChange is when the autoscaler last added a shard or started
	// draining one (cooldown counts from it).
	// +optional
	LastChange *metav1.Time `json:"lastChange,omitempty"`
	// Reason says why the shard count last changed.
	// +optional
	Reason string `json:"reason,omitempty"`
	// Overloaded is how many shards the last evaluation found overloaded.
	// +optional
	Overloaded int32 `json:"overloaded,omitempty"`
	// NextShardID is the id the next added shard gets. Ids are never
	// reused: a reader's cursor keeps a removed shard's position, which
	// must not skip a later shard's events.
	// +optional
	NextShardID int32 `json:"nextShardID,omitempty"`
}

// UpdateStatus is the rolling update in progress: the operator replaces
// pods one at a time, standbys first, handing an active's shards away
// before its pod restarts.
type UpdateStatus struct {
	// Revision is the StatefulSet revision pods are moved to.
	Revision string `json:"revision"`
	// Pod is the pod being updated now.
	// +optional
	Pod string `json:"pod,omitempty"`
	// Step is what happens to Pod: Moving (its shards go away),
	// Restarting (deleted, waiting for it to come back ready) or Rejoining.
	// +optional
	Step string `json:"step,omitempty"`
	// Updated is how many pods run Revision.
	// +optional
	Updated int32 `json:"updated,omitempty"`
}

// CredentialsStatus records the cluster's credentials.
type CredentialsStatus struct {
	// Rotation is the last value of the mesh.purplerain.io/rotate-credentials
	// annotation the operator handled.
	// +optional
	Rotation string `json:"rotation,omitempty"`
	// RotatedAt is when the credentials were last rotated.
	// +optional
	RotatedAt *metav1.Time `json:"rotatedAt,omitempty"`
}

// MigrationStatus is one shard move in flight.
type MigrationStatus struct {
	// Shard is the shard being moved.
	Shard int32 `json:"shard"`
	// From is the current owner.
	From string `json:"from"`
	// To is the new owner.
	To string `json:"to"`
	// Phase is the move's last reported phase.
	// +optional
	Phase string `json:"phase,omitempty"`
	// StartedAt is when the move started.
	// +optional
	StartedAt *metav1.Time `json:"startedAt,omitempty"`
}

// MeshClusterStatus is what the operator observed and decided.
type MeshClusterStatus struct {
	// ObservedGeneration is the generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Phase summarises what the cluster is doing.
	// +optional
	Phase Phase `json:"phase,omitempty"`
	// Conditions: Available, Progressing, Degraded, ScaleDownBlocked.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// Nodes is the number of active nodes currently in the topology (the
	// scale subresource's status replicas).
	// +optional
	Nodes int32 `json:"nodes,omitempty"`
	// ReadyNodes is the number of ready pods, actives and standbys.
	// +optional
	ReadyNodes int32 `json:"readyNodes,omitempty"`
	// ShardCount is the number of shards, base and added.
	// +optional
	ShardCount int32 `json:"shardCount,omitempty"`
	// Epoch is the topology epoch, bumped on every ownership change.
	// +optional
	Epoch int64 `json:"epoch,omitempty"`
	// Selector is the label selector of node pods (for the scale
	// subresource).
	// +optional
	Selector string `json:"selector,omitempty"`
	// Members are the nodes in the topology.
	// +listType=map
	// +listMapKey=name
	// +optional
	Members []MemberStatus `json:"members,omitempty"`
	// Shards is every shard's placement.
	// +listType=map
	// +listMapKey=id
	// +optional
	Shards []ShardStatus `json:"shards,omitempty"`
	// Migrations are the shard moves in flight.
	// +listType=map
	// +listMapKey=shard
	// +optional
	Migrations []MigrationStatus `json:"migrations,omitempty"`
	// Autoscale is the shard autoscaler's record.
	// +optional
	Autoscale *AutoscaleStatus `json:"autoscale,omitempty"`
	// Update is the rolling update in progress, if any.
	// +optional
	Update *UpdateStatus `json:"update,omitempty"`
	// Credentials records credential rotations.
	// +optional
	Credentials *CredentialsStatus `json:"credentials,omitempty"`
}

// MeshCluster runs a mesh cluster: StatefulSet pods running mesh-node, with
// sharded logs, standbys and daemons, scaled and failed over safely.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:subresource:scale:specpath=.spec.nodes,statuspath=.status.nodes,selectorpath=.status.selector
// +kubebuilder:resource:shortName=mesh;meshes,categories=all
// +kubebuilder:printcolumn:name="Nodes",type=integer,JSONPath=`.spec.nodes`
// +kubebuilder:printcolumn:name="Ready",type=integer,JSONPath=`.status.readyNodes`
// +kubebuilder:printcolumn:name="Standby",type=integer,JSONPath=`.spec.standby.replicas`
// +kubebuilder:printcolumn:name="Shards",type=integer,JSONPath=`.status.shardCount`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type MeshCluster struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec declares the cluster.
	// +kubebuilder:default={}
	// +optional
	Spec MeshClusterSpec `json:"spec"`
	// Status is what the operator observed and decided.
	// +optional
	Status MeshClusterStatus `json:"status,omitempty"`
}

// MeshClusterList is a list of MeshClusters.
//
// +kubebuilder:object:root=true
type MeshClusterList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []MeshCluster `json:"items"`
}

// IsPaused says whether the operator must not change the cluster.
func (m *MeshCluster) IsPaused() bool {
	return m.Spec.Paused || m.Annotations[PausedAnnotation] == "true"
}

// Replicas is the StatefulSet size the spec asks for: actives and standbys.
func (s *MeshClusterSpec) Replicas() int32 {
	return s.Nodes + s.Standby.Count()
}

// Count is the number of standby nodes; the API server defaults an unset
// count to 1.
func (s *StandbySpec) Count() int32 {
	if s.Replicas == nil {
		return 1
	}
	return *s.Replicas
}

func init() {
	SchemeBuilder.Register(&MeshCluster{}, &MeshClusterList{})
}

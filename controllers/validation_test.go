package controllers_test

import (
	"context"
	"os"
	"path/filepath"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
)

// manifest decodes a MeshCluster manifest as kubectl would send it.
func manifest(name, spec string) *unstructured.Unstructured {
	doc := "apiVersion: mesh.purplerain.io/v1alpha1\nkind: MeshCluster\nmetadata:\n  name: " + name + "\n  namespace: default\nspec:\n" + spec
	obj := &unstructured.Unstructured{}
	Expect(yaml.Unmarshal([]byte(doc), &obj.Object)).To(Succeed(), doc)
	return obj
}

// strictDryRun is what `kubectl apply --dry-run=server` asks for: the API
// server validates and defaults the object without storing it, and rejects
// unknown fields.
var strictDryRun = &client.CreateOptions{DryRun: []string{metav1.DryRunAll}, FieldValidation: "Strict"}

var _ = Describe("MeshCluster validation by the API server", func() {
	ctx := context.Background()

	DescribeTable("rejects an invalid manifest with a readable message",
		func(spec, message string) {
			err := k8sClient.Create(ctx, manifest("invalid", spec), strictDryRun)
			Expect(err).To(HaveOccurred())
			Expect(err.Error()).To(ContainSubstring(message))
		},
		Entry("no active node", "  nodes: 0\n", "spec.nodes: Invalid value: 0: spec.nodes in body should be greater than or equal to 1"),
		Entry("too many active nodes", "  nodes: 5000\n", "spec.nodes in body should be less than or equal to 1000"),
		Entry("negative standby count", "  standby:\n    replicas: -1\n", "spec.standby.replicas in body should be greater than or equal to 0"),
		Entry("unknown ack policy", "  standby:\n    ackPolicy: Quorum\n", `spec.standby.ackPolicy: Unsupported value: "Quorum": supported values: "Leader", "Standby"`),
		Entry("standby acks without a standby", "  standby:\n    replicas: 0\n    ackPolicy: Standby\n", "standby.replicas must be at least 1 when standby.ackPolicy is Standby"),
		Entry("failoverAfter not a duration", "  standby:\n    failoverAfter: soon\n", "spec.standby.failoverAfter in body should match"),
		Entry("no shard", "  shards:\n    count: 0\n", "spec.shards.count in body should be greater than or equal to 1"),
		Entry("shard ids past 16 bits", "  shards:\n    count: 70000\n", "spec.shards.count in body should be less than or equal to 65535"),
		Entry("autoscale cap below the base shards", "  shards:\n    count: 8\n    autoscale:\n      enabled: true\n      maxShards: 4\n", "shards.autoscale.maxShards must be at least shards.count"),
		Entry("fill ratio above 100%", "  shards:\n    autoscale:\n      fillRatioThresholdPercent: 150\n", "fillRatioThresholdPercent in body should be less than or equal to 100"),
		Entry("retention of zero events", "  retention:\n    maxEvents: 0\n", "spec.retention.maxEvents in body should be greater than or equal to 1"),
		Entry("no concurrent migration", "  migration:\n    maxConcurrent: 0\n", "spec.migration.maxConcurrent in body should be greater than or equal to 1"),
		Entry("unknown timeout action", "  migration:\n    onTimeout: Explode\n", `spec.migration.onTimeout: Unsupported value: "Explode"`),
		Entry("unknown migration strategy", "  migration:\n    strategy: Live\n", `spec.migration.strategy: Unsupported value: "Live"`),
		Entry("unknown storage mode", "  storage:\n    mode: Tape\n", `spec.storage.mode: Unsupported value: "Tape": supported values: "Memory", "Disk"`),
		Entry("disk without a size", "  storage:\n    mode: Disk\n", "storage.size is required when storage.mode is Disk"),
		Entry("fsync every N without N", "  storage:\n    fsync:\n      policy: EveryN\n", "storage.fsync.everyN is required when storage.fsync.policy is EveryN"),
		Entry("fsync interval without interval", "  storage:\n    fsync:\n      policy: Interval\n", "storage.fsync.interval is required when storage.fsync.policy is Interval"),
		Entry("unknown PVC retention", "  storage:\n    pvcRetention: Forever\n", `spec.storage.pvcRetention: Unsupported value: "Forever"`),
		Entry("JetStream adapter without URL", "  adapter:\n    type: JetStream\n", "adapter.url is required unless adapter.type is None"),
		Entry("Redis adapter with a NATS URL", "  adapter:\n    type: Redis\n    url: nats://nats:4222\n", "adapter.url must start with redis:// or rediss:// for Redis"),
		Entry("unknown adapter", "  adapter:\n    type: Kafka\n    url: kafka://k:9092\n", `spec.adapter.type: Unsupported value: "Kafka"`),
		Entry("unknown daemon kind", "  daemons:\n  - name: d\n    kind: average\n", `spec.daemons[0].kind: Unsupported value: "average": supported values: "counter", "sum", "tasks"`),
		Entry("two daemons with one name", "  daemons:\n  - name: d\n    kind: counter\n  - name: d\n    kind: sum\n", `spec.daemons[1]: Duplicate value: {"name":"d"}`),
		Entry("daemon name not a DNS label", "  daemons:\n  - name: Counter_1\n    kind: counter\n", "spec.daemons[0].name in body should match"),
		Entry("daemon on a shard that does not exist", "  shards:\n    count: 4\n  daemons:\n  - name: d\n    kind: counter\n    shards:\n      ids: [1, 9]\n", "daemons[].shards.ids must name base shards, below shards.count"),
		Entry("empty image", "  image: \"\"\n", "spec.image in body should be at least 1 chars long"),
		Entry("a typo in a field name", "  replicas: 3\n", `unknown field "spec.replicas"`),
	)

	It("defaults a minimal manifest", func() {
		obj := manifest("minimal", "  nodes: 2\n")
		Expect(k8sClient.Create(ctx, obj, strictDryRun)).To(Succeed())
		mc := &meshv1.MeshCluster{}
		Expect(runtimeConvert(obj, mc)).To(Succeed())
		Expect(mc.Spec.Nodes).To(Equal(int32(2)))
		Expect(mc.Spec.Standby.Replicas).To(HaveValue(Equal(int32(1))))
		Expect(mc.Spec.Standby.AckPolicy).To(Equal(meshv1.AckLeader))
		Expect(mc.Spec.Standby.FailoverAfter.Duration.String()).To(Equal("3s"))
		Expect(mc.Spec.Standby.LeaseDuration.Duration.String()).To(Equal("2s"))
		Expect(mc.Spec.Shards.Count).To(Equal(int32(8)))
		Expect(mc.Spec.Storage.Mode).To(Equal(meshv1.StorageMemory))
		Expect(mc.Spec.Storage.Fsync.Policy).To(Equal(meshv1.FsyncNever))
		Expect(mc.Spec.Storage.PVCRetention).To(Equal(meshv1.PVCRetain))
		Expect(mc.Spec.Migration.Strategy).To(Equal(meshv1.MigrationSnapshotReplay))
		Expect(mc.Spec.Migration.MaxConcurrent).To(Equal(int32(1)))
		Expect(mc.Spec.Migration.OnTimeout).To(Equal(meshv1.OnTimeoutAbort))
		Expect(mc.Spec.Image).To(Equal(meshv1.DefaultImage))
	})

	It("defaults autoscaling thresholds when autoscaling is enabled", func() {
		obj := manifest("autoscaled", "  shards:\n    count: 4\n    autoscale:\n      enabled: true\n")
		Expect(k8sClient.Create(ctx, obj, strictDryRun)).To(Succeed())
		mc := &meshv1.MeshCluster{}
		Expect(runtimeConvert(obj, mc)).To(Succeed())
		Expect(mc.Spec.Shards.Autoscale.MaxShards).To(Equal(int32(64)))
		Expect(mc.Spec.Shards.Autoscale.FillRatioThresholdPercent).To(Equal(int32(70)))
		Expect(mc.Spec.Shards.Autoscale.ScaleDownDelay.Duration.String()).To(Equal("5m0s"))
	})

	It("accepts every sample in config/samples", func() {
		files, err := filepath.Glob(filepath.Join("..", "config", "samples", "mesh_*.yaml"))
		Expect(err).NotTo(HaveOccurred())
		Expect(files).NotTo(BeEmpty())
		for _, f := range files {
			data, err := os.ReadFile(f)
			Expect(err).NotTo(HaveOccurred())
			obj := &unstructured.Unstructured{}
			Expect(yaml.Unmarshal(data, &obj.Object)).To(Succeed(), f)
			obj.SetNamespace("default")
			Expect(k8sClient.Create(ctx, obj, strictDryRun)).To(Succeed(), f)
		}
	})

	Describe("fields whose change would lose data", func() {
		var mc *meshv1.MeshCluster
		BeforeEach(func() {
			mc = &meshv1.MeshCluster{ObjectMeta: metav1.ObjectMeta{Name: "immutable", Namespace: "default", Annotations: map[string]string{meshv1.PausedAnnotation: "true"}}}
			mc.Spec.Shards.Count = 4
			mc.Spec.Storage.Mode = meshv1.StorageMemory
			Expect(k8sClient.Create(ctx, mc)).To(Succeed())
			DeferCleanup(func() { Expect(client.IgnoreNotFound(k8sClient.Delete(ctx, mc))).To(Succeed()) })
		})

		// A merge patch carries no resourceVersion, so the operator's own
		// status writes cannot make these updates conflict.
		dryRunPatch := func(mutate func(*meshv1.MeshCluster)) error {
			orig := mc.DeepCopy()
			mutate(mc)
			return k8sClient.Patch(ctx, mc, client.MergeFrom(orig), client.DryRunAll)
		}

		It("refuses to change shards.count", func() {
			err := dryRunPatch(func(m *meshv1.MeshCluster) { m.Spec.Shards.Count = 6 })
			Expect(err).To(MatchError(ContainSubstring("shards.count is immutable")))
		})

		It("refuses to change storage.mode", func() {
			err := dryRunPatch(func(m *meshv1.MeshCluster) {
				m.Spec.Storage.Mode = meshv1.StorageDisk
				q := resourceQuantity("1Gi")
				m.Spec.Storage.Size = &q
			})
			Expect(err).To(MatchError(ContainSubstring("storage.mode is immutable")))
		})

		It("allows changing the node count", func() {
			Expect(dryRunPatch(func(m *meshv1.MeshCluster) { m.Spec.Nodes = 5 })).To(Succeed())
		})
	})
})

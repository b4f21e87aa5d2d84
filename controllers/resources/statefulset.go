package resources

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"path"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
	nodeconfig "github.com/purplerain/mesh-operator/node/config"
)

// ConfigHashAnnotation on the pod template records the node configuration
// the pods run with; a changed configuration changes the template (a new
// StatefulSet revision), which the operator rolls out like an image
// change.
const ConfigHashAnnotation = "mesh.purplerain.io/config-hash"

const (
	containerName   = "mesh-node"
	configVolume    = "config"
	dataVolume      = "data"
	credsVolume     = "adapter-credentials"
	podInfoVolume   = "podinfo"
	defaultGraceSec = 30
	nonRootUID      = 65532
)

// StatefulSet builds the nodes' StatefulSet with the given replica count
// (the reconciler decides it: a scale-down is never a plain replica
// change) and the hash of the node configuration.
func StatefulSet(mc *meshv1.MeshCluster, replicas int32, configHash string) *appsv1.StatefulSet {
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: StatefulSetName(mc), Namespace: mc.Namespace},
		Spec: appsv1.StatefulSetSpec{
			ServiceName:         HeadlessServiceName(mc),
			Selector:            &metav1.LabelSelector{MatchLabels: SelectorLabels(mc)},
			PodManagementPolicy: appsv1.ParallelPodManagement,
		},
	}
	if mc.Spec.Storage.Mode == meshv1.StorageDisk {
		sts.Spec.VolumeClaimTemplates = []corev1.PersistentVolumeClaim{dataClaimTemplate(mc)}
	}
	UpdateStatefulSet(mc, sts, replicas, configHash)
	return sts
}

// UpdateStatefulSet sets the fields the operator owns on an existing
// StatefulSet. Immutable fields (selector, service name, claim templates)
// are only set by StatefulSet.
func UpdateStatefulSet(mc *meshv1.MeshCluster, sts *appsv1.StatefulSet, replicas int32, configHash string) {
	sts.Labels = mergeLabels(sts.Labels, Labels(mc))
	sts.Spec.Replicas = ptr.To(replicas)
	// OnDelete: the StatefulSet controller only recreates a pod the
	// operator deleted, from the update revision. The operator rolls the
	// pods itself, one at a time, handing an active's shards off before
	// its pod goes (controllers/reconcile_update.go); the StatefulSet
	// controller would restart owners under their writes.
	sts.Spec.UpdateStrategy = appsv1.StatefulSetUpdateStrategy{Type: appsv1.OnDeleteStatefulSetStrategyType}
	// Data PVCs never carry owner references: the operator deletes them
	// itself according to spec.storage.pvcRetention.
	sts.Spec.PersistentVolumeClaimRetentionPolicy = &appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy{
		WhenDeleted: appsv1.RetainPersistentVolumeClaimRetentionPolicyType,
		WhenScaled:  appsv1.RetainPersistentVolumeClaimRetentionPolicyType,
	}
	updatePodTemplate(mc, &sts.Spec.Template, configHash)
}

// ConfigHash is the hash recorded in ConfigHashAnnotation. It leaves the
// rules section out: rules reach running nodes through the admin API
// (controllers/reconcile_rules.go), so a rules change rolls no pod. A
// configuration without rules hashes exactly as before rules existed.
func ConfigHash(cm *corev1.ConfigMap) string {
	data := []byte(cm.Data[nodeconfig.FileName])
	var c nodeconfig.Config
	if json.Unmarshal(data, &c) == nil && c.Rules != nil {
		// Re-rendered the way UpdateConfigMap renders, without rules.
		c.Rules = nil
		if out, err := json.MarshalIndent(&c, "", "  "); err == nil {
			data = append(out, '\n')
		}
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:8])
}

func updatePodTemplate(mc *meshv1.MeshCluster, t *corev1.PodTemplateSpec, configHash string) {
	o := &mc.Spec.PodTemplate
	t.Labels = mergeLabels(mergeLabels(nil, o.Labels), Labels(mc))
	t.Annotations = mergeLabels(mergeLabels(nil, o.Annotations), map[string]string{ConfigHashAnnotation: configHash})

	ps := &t.Spec
	ps.Containers = []corev1.Container{nodeContainer(mc)}
	ps.Volumes = podVolumes(mc)
	ps.NodeSelector = o.NodeSelector
	ps.Tolerations = o.Tolerations
	ps.TopologySpreadConstraints = o.TopologySpreadConstraints
	ps.PriorityClassName = o.PriorityClassName
	ps.Affinity = o.Affinity
	if ps.Affinity == nil {
		ps.Affinity = defaultAffinity(mc)
	}
	ps.TerminationGracePeriodSeconds = ptr.To[int64](defaultGraceSec)
	if o.TerminationGracePeriodSeconds != nil {
		ps.TerminationGracePeriodSeconds = ptr.To(*o.TerminationGracePeriodSeconds)
	}
	ps.SecurityContext = &corev1.PodSecurityContext{
		RunAsNonRoot:   ptr.To(true),
		RunAsUser:      ptr.To[int64](nonRootUID),
		RunAsGroup:     ptr.To[int64](nonRootUID),
		FSGroup:        ptr.To[int64](nonRootUID),
		SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

// defaultAffinity prefers spreading a cluster's nodes over Kubernetes
// nodes, so one machine's failure takes at most one mesh node when there is
// room.
func defaultAffinity(mc *meshv1.MeshCluster) *corev1.Affinity {
	return &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
		PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{
			Weight: 100,
			PodAffinityTerm: corev1.PodAffinityTerm{
				LabelSelector: &metav1.LabelSelector{MatchLabels: SelectorLabels(mc)},
				TopologyKey:   corev1.LabelHostname,
			},
		}},
	}}
}

func nodeContainer(mc *meshv1.MeshCluster) corev1.Container {
	fieldEnv := func(name, fieldPath string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{
			FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: fieldPath},
		}}
	}
	port := func(name string, p int32) corev1.ContainerPort {
		return corev1.ContainerPort{Name: name, ContainerPort: p, Protocol: corev1.ProtocolTCP}
	}
	probe := func(p string, period, failures int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: p, Port: intstr.FromString("admin"), Scheme: corev1.URISchemeHTTP,
			}},
			TimeoutSeconds:   1,
			PeriodSeconds:    period,
			SuccessThreshold: 1,
			FailureThreshold: failures,
		}
	}
	c := corev1.Container{
		Name:            containerName,
		Image:           mc.Spec.Image,
		ImagePullPolicy: mc.Spec.ImagePullPolicy,
		Command:         []string{"mesh-node"},
		Args:            []string{"--config=" + path.Join(ConfigDir, nodeconfig.FileName)},
		Env: []corev1.EnvVar{
			fieldEnv("POD_NAME", "metadata.name"),
			fieldEnv("POD_NAMESPACE", "metadata.namespace"),
			fieldEnv("POD_IP", "status.podIP"),
			{Name: "MESH_HEADLESS_SERVICE", Value: HeadlessServiceName(mc)},
		},
		Ports: []corev1.ContainerPort{
			port("admin", nodeconfig.AdminPort),
			port("data", nodeconfig.DataPort),
			port("wire", nodeconfig.WirePort),
		},
		Resources: *mc.Spec.Resources.DeepCopy(),
		VolumeMounts: []corev1.VolumeMount{
			{Name: configVolume, MountPath: ConfigDir, ReadOnly: true},
			{Name: clusterKeyVolume, MountPath: ClusterKeyDir, ReadOnly: true},
			{Name: dataVolume, MountPath: DataDir},
		},
		ReadinessProbe:           probe("/readyz", 2, 3),
		LivenessProbe:            probe("/healthz", 5, 6),
		TerminationMessagePath:   corev1.TerminationMessagePathDefault,
		TerminationMessagePolicy: corev1.TerminationMessageReadFile,
		SecurityContext: &corev1.SecurityContext{
			AllowPrivilegeEscalation: ptr.To(false),
			ReadOnlyRootFilesystem:   ptr.To(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		},
	}
	if a := mc.Spec.Adapter; a != nil && a.SecretRef != nil {
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: credsVolume, MountPath: CredentialsDir, ReadOnly: true})
	}
	if mc.Spec.Subnets != nil {
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: podInfoVolume, MountPath: PodInfoDir, ReadOnly: true})
	}
	return c
}

func podVolumes(mc *meshv1.MeshCluster) []corev1.Volume {
	mode := ptr.To[int32](0o444)
	vols := []corev1.Volume{{
		Name: configVolume,
		VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: ConfigMapName(mc)},
			DefaultMode:          mode,
		}},
	}, {
		Name: clusterKeyVolume,
		VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: ClusterKeySecretName(mc), DefaultMode: ptr.To[int32](0o440),
		}},
	}}
	if mc.Spec.Storage.Mode != meshv1.StorageDisk {
		// Memory mode keeps logs in the process; the directory is scratch
		// space only (the root filesystem is read-only).
		vols = append(vols, corev1.Volume{Name: dataVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
	}
	if a := mc.Spec.Adapter; a != nil && a.SecretRef != nil {
		vols = append(vols, corev1.Volume{
			Name: credsVolume,
			VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
				SecretName: a.SecretRef.Name, DefaultMode: mode,
			}},
		})
	}
	if mc.Spec.Subnets != nil {
		// The pod's labels, for the node's subnet assignment.
		vols = append(vols, corev1.Volume{
			Name: podInfoVolume,
			VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{
				Items: []corev1.DownwardAPIVolumeFile{{
					Path: PodLabelsFile, FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.labels"},
				}},
				DefaultMode: mode,
			}},
		})
	}
	return vols
}

func dataClaimTemplate(mc *meshv1.MeshCluster) corev1.PersistentVolumeClaim {
	pvc := corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: dataVolume, Labels: Labels(mc)},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: mc.Spec.Storage.StorageClassName,
		},
	}
	if s := mc.Spec.Storage.Size; s != nil {
		pvc.Spec.Resources.Requests = corev1.ResourceList{corev1.ResourceStorage: s.DeepCopy()}
	}
	return pvc
}

// DataPVCOrdinal parses a data PVC name (<claim>-<statefulset>-<ordinal>,
// as the StatefulSet controller names them) into its pod ordinal.
func DataPVCOrdinal(mc *meshv1.MeshCluster, name string) (int, bool) {
	prefix := dataVolume + "-" + StatefulSetName(mc) + "-"
	if !strings.HasPrefix(name, prefix) {
		return 0, false
	}
	ord, err := strconv.Atoi(strings.TrimPrefix(name, prefix))
	if err != nil || ord < 0 {
		return 0, false
	}
	return ord, true
}

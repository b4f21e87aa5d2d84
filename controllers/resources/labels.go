package resources

import (
	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
)

// Label keys set on every child object.
const (
	LabelName      = "app.kubernetes.io/name"
	LabelInstance  = "app.kubernetes.io/instance"
	LabelComponent = "app.kubernetes.io/component"
	LabelManagedBy = "app.kubernetes.io/managed-by"

	appName   = "mesh-node"
	managedBy = "mesh-operator"
)

// SelectorLabels select the node pods of a cluster. They are immutable on
// a StatefulSet, so they never change for a cluster.
func SelectorLabels(mc *meshv1.MeshCluster) map[string]string {
	return map[string]string{
		LabelName:     appName,
		LabelInstance: mc.Name,
	}
}

// Labels are the labels of every child object.
func Labels(mc *meshv1.MeshCluster) map[string]string {
	l := SelectorLabels(mc)
	l[LabelComponent] = "node"
	l[LabelManagedBy] = managedBy
	return l
}

// Names of the child objects.

// StatefulSetName is the name of the nodes' StatefulSet; pods are
// <name>-0 … <name>-(n-1).
func StatefulSetName(mc *meshv1.MeshCluster) string { return mc.Name }

// HeadlessServiceName gives each pod a stable DNS name.
func HeadlessServiceName(mc *meshv1.MeshCluster) string { return mc.Name + "-nodes" }

// ClientServiceName is the Service applications use for the data API.
func ClientServiceName(mc *meshv1.MeshCluster) string { return mc.Name }

// ConfigMapName holds the node configuration.
func ConfigMapName(mc *meshv1.MeshCluster) string { return mc.Name + "-config" }

// PDBName is the PodDisruptionBudget's name.
func PDBName(mc *meshv1.MeshCluster) string { return mc.Name }

// mergeLabels returns dst with src's entries added (src wins).
func mergeLabels(dst map[string]string, src map[string]string) map[string]string {
	if dst == nil {
		dst = map[string]string{}
	}
	for k, v := range src {
		dst[k] = v
	}
	return dst
}

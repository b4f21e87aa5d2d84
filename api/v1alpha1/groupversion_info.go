// Package v1alpha1 holds the MeshCluster API, group mesh.purplerain.io.
//
// The types carry controller-gen markers: defaults, enums, minimums and CEL
// rules make the API server reject bad specs with a message a person can act
// on, before the operator ever sees them. Fields whose change would lose data
// (shards.count, storage.mode) are immutable.
//
// +kubebuilder:object:generate=true
// +groupName=mesh.purplerain.io
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of this API.
	GroupVersion = schema.GroupVersion{Group: "mesh.purplerain.io", Version: "v1alpha1"}

	// SchemeBuilder registers the types of this package with a scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the types of this package to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

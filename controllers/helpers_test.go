package controllers_test

import (
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
)

func runtimeConvert(u *unstructured.Unstructured, into any) error {
	return runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, into)
}

func resourceQuantity(s string) resource.Quantity { return resource.MustParse(s) }

func clusterOf(name string) *meshv1.MeshCluster {
	return &meshv1.MeshCluster{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}}
}

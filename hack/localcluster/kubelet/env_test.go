package kubelet

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// objectMap is a volumeSources over plain maps keyed by name.
type objectMap struct {
	configMaps map[string]*corev1.ConfigMap
	secrets    map[string]*corev1.Secret
	// tokens by "<service account>/<audience>".
	tokens map[string]string
	node   corev1.ResourceList
}

func (o objectMap) ServiceAccountToken(pod *corev1.Pod, p *corev1.ServiceAccountTokenProjection) ([]byte, error) {
	if t, ok := o.tokens[pod.Spec.ServiceAccountName+"/"+p.Audience]; ok {
		return []byte(t), nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "serviceaccounts"}, pod.Spec.ServiceAccountName)
}

func (o objectMap) Allocatable() corev1.ResourceList { return o.node }

func (o objectMap) ConfigMap(_, name string) (*corev1.ConfigMap, error) {
	if cm, ok := o.configMaps[name]; ok {
		return cm, nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "configmaps"}, name)
}

func (o objectMap) Secret(_, name string) (*corev1.Secret, error) {
	if s, ok := o.secrets[name]; ok {
		return s, nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "secrets"}, name)
}

func testPod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: "demo-0", Namespace: "ns1", UID: "uid-1",
			Labels:      map[string]string{"app": "mesh", "tier": "data"},
			Annotations: map[string]string{"note": "hi"},
		},
		Spec: corev1.PodSpec{NodeName: "local-node", ServiceAccountName: "sa"},
		Status: corev1.PodStatus{
			PodIP: "127.0.0.12", PodIPs: []corev1.PodIP{{IP: "127.0.0.12"}},
			HostIP: "127.0.0.1", HostIPs: []corev1.HostIP{{IP: "127.0.0.1"}},
		},
	}
}

func field(name, path string) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
}

func TestResolveEnvDownwardAPIConfigMapsSecretsAndExpansion(t *testing.T) {
	objs := objectMap{
		configMaps: map[string]*corev1.ConfigMap{"cfg": {Data: map[string]string{"LEVEL": "debug", "PORT": "9440"}}},
		secrets:    map[string]*corev1.Secret{"creds": {Data: map[string][]byte{"token": []byte("s3cret")}}},
	}
	opt := true
	c := &corev1.Container{
		Name: "mesh-node",
		EnvFrom: []corev1.EnvFromSource{
			{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}},
			{Prefix: "S_", SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "creds"}}},
			{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "absent"}, Optional: &opt}},
		},
		Env: []corev1.EnvVar{
			field("POD_NAME", "metadata.name"),
			field("POD_NAMESPACE", "metadata.namespace"),
			field("POD_UID", "metadata.uid"),
			field("POD_IP", "status.podIP"),
			field("POD_IPS", "status.podIPs"),
			field("HOST_IP", "status.hostIP"),
			field("NODE", "spec.nodeName"),
			field("SA", "spec.serviceAccountName"),
			field("TIER", "metadata.labels['tier']"),
			field("LABELS", "metadata.labels"),
			field("NOTE", "metadata.annotations['note']"),
			{Name: "ADDR", Value: "$(POD_IP):$(PORT)"},
			{Name: "LITERAL", Value: "$$(POD_IP) and $(UNDEFINED)"},
			{Name: "LEVEL", Value: "info"}, // env overrides envFrom
			{Name: "TOKEN", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: "creds"}, Key: "token"}}},
			{Name: "MAYBE", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Key: "missing", Optional: &opt}}},
		},
	}
	got, err := resolveEnv(testPod(), c, objs, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []corev1.EnvVar{
		{Name: "LEVEL", Value: "info"}, {Name: "PORT", Value: "9440"}, {Name: "S_token", Value: "s3cret"},
		{Name: "POD_NAME", Value: "demo-0"}, {Name: "POD_NAMESPACE", Value: "ns1"}, {Name: "POD_UID", Value: "uid-1"},
		{Name: "POD_IP", Value: "127.0.0.12"}, {Name: "POD_IPS", Value: "127.0.0.12"}, {Name: "HOST_IP", Value: "127.0.0.1"},
		{Name: "NODE", Value: "local-node"}, {Name: "SA", Value: "sa"}, {Name: "TIER", Value: "data"},
		{Name: "LABELS", Value: "app=\"mesh\"\ntier=\"data\""}, {Name: "NOTE", Value: "hi"},
		{Name: "ADDR", Value: "127.0.0.12:9440"}, {Name: "LITERAL", Value: "$(POD_IP) and $(UNDEFINED)"},
		{Name: "TOKEN", Value: "s3cret"},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("env (-want +got):\n%s", d)
	}
}

func TestResolveEnvFailsOnMissingRequiredSources(t *testing.T) {
	objs := objectMap{configMaps: map[string]*corev1.ConfigMap{"cfg": {Data: map[string]string{}}}}
	for name, ev := range map[string]corev1.EnvVar{
		"missing configmap": {Name: "X", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: "nope"}, Key: "k"}}},
		"missing key": {Name: "X", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Key: "k"}}},
		"missing secret": {Name: "X", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: "nope"}, Key: "k"}}},
		"unknown field": field("X", "spec.hostname"),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := resolveEnv(testPod(), &corev1.Container{Env: []corev1.EnvVar{ev}}, objs, nil)
			if err == nil || !strings.Contains(err.Error(), "env X") {
				t.Fatalf("err = %v, want an error naming env X", err)
			}
		})
	}
}

func TestResolveEnvResourceFields(t *testing.T) {
	c := &corev1.Container{
		Name: "mesh-node",
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("512Mi")},
		},
		Env: []corev1.EnvVar{
			{Name: "MEM_MI", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{
				Resource: "limits.memory", Divisor: resource.MustParse("1Mi")}}},
			{Name: "CPU_REQ_M", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{
				Resource: "requests.cpu", Divisor: resource.MustParse("1m")}}},
			{Name: "CPU_REQ", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{
				Resource: "requests.cpu"}}}, // rounded up to whole CPUs
			{Name: "CPU_LIMIT", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{
				Resource: "limits.cpu"}}}, // unset: the node's allocatable
		},
	}
	pod := testPod()
	pod.Spec.Containers = []corev1.Container{*c}
	got, err := resolveEnv(pod, c, objectMap{}, corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("8")})
	if err != nil {
		t.Fatal(err)
	}
	want := []corev1.EnvVar{{Name: "MEM_MI", Value: "512"}, {Name: "CPU_REQ_M", Value: "250"}, {Name: "CPU_REQ", Value: "1"}, {Name: "CPU_LIMIT", Value: "8"}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("env (-want +got):\n%s", d)
	}
}

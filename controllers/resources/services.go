package resources

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
	nodeconfig "github.com/purplerain/mesh-operator/node/config"
)

// HeadlessService gives each node pod a stable DNS name
// (<pod>.<cluster>-nodes) and publishes not-ready pods, so a joining node
// can be reached by the operator before it is ready.
func HeadlessService(mc *meshv1.MeshCluster) *corev1.Service {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: HeadlessServiceName(mc), Namespace: mc.Namespace}}
	UpdateHeadlessService(mc, svc)
	return svc
}

// UpdateHeadlessService sets the fields the operator owns.
func UpdateHeadlessService(mc *meshv1.MeshCluster, svc *corev1.Service) {
	svc.Labels = mergeLabels(svc.Labels, Labels(mc))
	svc.Spec.ClusterIP = corev1.ClusterIPNone
	svc.Spec.PublishNotReadyAddresses = true
	svc.Spec.Selector = SelectorLabels(mc)
	svc.Spec.Ports = nodePorts(true)
}

// ClientService is the Service applications use for the data API; it
// routes to ready nodes only.
func ClientService(mc *meshv1.MeshCluster) *corev1.Service {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: ClientServiceName(mc), Namespace: mc.Namespace}}
	UpdateClientService(mc, svc)
	return svc
}

// UpdateClientService sets the fields the operator owns. The ClusterIP is
// left as allocated.
func UpdateClientService(mc *meshv1.MeshCluster, svc *corev1.Service) {
	svc.Labels = mergeLabels(svc.Labels, Labels(mc))
	svc.Spec.Type = corev1.ServiceTypeClusterIP
	svc.Spec.Selector = SelectorLabels(mc)
	svc.Spec.Ports = nodePorts(false)
	svc.Spec.SessionAffinity = corev1.ServiceAffinityNone
}

func nodePorts(withAdmin bool) []corev1.ServicePort {
	port := func(name string, p int32) corev1.ServicePort {
		return corev1.ServicePort{Name: name, Port: p, TargetPort: intstr.FromString(name), Protocol: corev1.ProtocolTCP}
	}
	ports := []corev1.ServicePort{
		port("data", nodeconfig.DataPort),
		port("wire", nodeconfig.WirePort),
	}
	if withAdmin {
		ports = append([]corev1.ServicePort{port("admin", nodeconfig.AdminPort)}, ports...)
	}
	return ports
}

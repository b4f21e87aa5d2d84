// Package resources holds pure functions from a MeshCluster to the
// Kubernetes objects that should exist for it: Services, the node
// ConfigMap, the StatefulSet and the PodDisruptionBudget.
//
// Each builder has a Build function (the object to create) and an Update
// function that mutates an existing object in place, touching only the
// fields the operator owns. Update sets every field the API server would
// otherwise default, so an unchanged spec produces an object that is
// semantically equal to what is stored and the reconciler makes no write.
package resources

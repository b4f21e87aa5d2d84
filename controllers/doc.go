// Package controllers reconciles MeshClusters.
package controllers

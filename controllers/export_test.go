package controllers

import (
	"context"

	"k8s.io/apimachinery/pkg/types"
)

// SetFailpoint installs a failpoint hook (see failpoints.go) until the
// returned function is called.
func SetFailpoint(f func(ctx context.Context, cluster types.NamespacedName, step string, epoch uint64) error) (restore func()) {
	h := failpointFunc(f)
	failpointHook.Store(&h)
	return func() { failpointHook.Store(nil) }
}

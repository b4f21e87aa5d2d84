package compute

import (
	"fmt"
	"sort"
	"sync"
)

// Factory builds a fresh daemon named name from its declared config (the
// MeshCluster's daemons[].config, JSON). It must not return shared state.
type Factory func(name string, config []byte) (MeshDaemon, error)

// Kinds is a registry of daemon factories by kind. It is safe for concurrent
// use; factories run with no lock held.
type Kinds struct {
	mu        sync.RWMutex
	factories map[string]Factory
}

// NewKinds returns an empty registry.
func NewKinds() *Kinds { return &Kinds{factories: make(map[string]Factory)} }

// Register adds a factory for kind. Registering a kind twice is an error so
// that two packages cannot silently shadow each other.
func (k *Kinds) Register(kind string, f Factory) error {
	if kind == "" || f == nil {
		return fmt.Errorf("compute: register kind %q: empty kind or nil factory", kind)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, ok := k.factories[kind]; ok {
		return fmt.Errorf("compute: register kind %q: already registered", kind)
	}
	k.factories[kind] = f
	return nil
}

// New builds a daemon of kind. An unregistered kind gives ErrUnknownKind.
func (k *Kinds) New(kind, name string, config []byte) (MeshDaemon, error) {
	k.mu.RLock()
	f, ok := k.factories[kind]
	k.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownKind, kind)
	}
	d, err := f(name, config)
	if err != nil {
		return nil, fmt.Errorf("compute: build %s daemon %q: %w", kind, name, err)
	}
	return d, nil
}

// Has reports whether kind is registered.
func (k *Kinds) Has(kind string) bool {
	k.mu.RLock()
	defer k.mu.RUnlock()
	_, ok := k.factories[kind]
	return ok
}

// List returns the registered kinds, sorted.
func (k *Kinds) List() []string {
	k.mu.RLock()
	defer k.mu.RUnlock()
	out := make([]string, 0, len(k.factories))
	for kind := range k.factories {
		out = append(out, kind)
	}
	sort.Strings(out)
	return out
}

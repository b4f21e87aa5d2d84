package compute

import (
	"fmt"
	"sort"
	"sync"
)

// Hosts is a node's table of running daemons by id. Its lock guards only
// the maps: every method that reaches a daemon looks the host up, releases
// the lock and then calls the host.
type Hosts struct {
	mu    sync.RWMutex
	hosts map[string]*Host
	moved map[string]string
}

// NewHosts returns an empty table.
func NewHosts() *Hosts {
	return &Hosts{hosts: make(map[string]*Host), moved: make(map[string]string)}
}

// Add hosts h. It clears any moved-away record for h's id.
func (t *Hosts) Add(h *Host) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.hosts[h.id]; ok {
		return fmt.Errorf("%w: %q", ErrExists, h.id)
	}
	t.hosts[h.id] = h
	delete(t.moved, h.id)
	return nil
}

// Get returns the host for id, a *MovedError if it migrated away, or
// ErrNotFound.
func (t *Hosts) Get(id string) (*Host, error) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if h, ok := t.hosts[id]; ok {
		return h, nil
	}
	if node, ok := t.moved[id]; ok {
		return nil, &MovedError{Daemon: id, Node: node}
	}
	return nil, fmt.Errorf("%w: %q", ErrNotFound, id)
}

// Remove drops id from the table and returns its host (nil if absent).
func (t *Hosts) Remove(id string) *Host {
	t.mu.Lock()
	defer t.mu.Unlock()
	h := t.hosts[id]
	delete(t.hosts, id)
	return h
}

// MarkMoved drops id and remembers that it now lives on node.
func (t *Hosts) MarkMoved(id, node string) *Host {
	t.mu.Lock()
	defer t.mu.Unlock()
	h := t.hosts[id]
	delete(t.hosts, id)
	t.moved[id] = node
	return h
}

// Deliver applies ev to daemon id (see Host.Deliver).
func (t *Hosts) Deliver(id string, ev Event) ([][]byte, error) {
	h, err := t.Get(id)
	if err != nil {
		return nil, err
	}
	return h.Deliver(ev)
}

// IDs lists the hosted daemon ids, sorted.
func (t *Hosts) IDs() []string {
	t.mu.RLock()
	defer t.mu.RUnlock()
	out := make([]string, 0, len(t.hosts))
	for id := range t.hosts {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

package kubelet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
)

// ErrNoAddress is returned when every address of the pool is in use or has
// one of the requested ports taken.
var ErrNoAddress = errors.New("no free pod address")

// IPPool hands out loopback addresses to pods. The cursor rotates so a
// released address is not handed out again at once.
type IPPool struct {
	mu     sync.Mutex
	first  netip.Addr
	size   int
	cursor int
	used   map[netip.Addr]bool
}

// NewIPPool returns a pool of the addresses first..last inclusive.
func NewIPPool(first, last netip.Addr) (*IPPool, error) {
	if !first.Is4() || !last.Is4() || last.Less(first) {
		return nil, fmt.Errorf("pod address range %s-%s: want IPv4, first <= last", first, last)
	}
	a, b := first.As4(), last.As4()
	n := int(uint32(b[0])<<24|uint32(b[1])<<16|uint32(b[2])<<8|uint32(b[3])) -
		int(uint32(a[0])<<24|uint32(a[1])<<16|uint32(a[2])<<8|uint32(a[3])) + 1
	return &IPPool{first: first, size: n, used: map[netip.Addr]bool{}}, nil
}

// Allocate returns an unused address on which every port can be bound.
func (p *IPPool) Allocate(ports []int32) (netip.Addr, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := 0; i < p.size; i++ {
		idx := (p.cursor + i) % p.size
		a := p.first
		for range idx {
			a = a.Next()
		}
		if p.used[a] || !portsFree(a, ports) {
			continue
		}
		p.used[a] = true
		p.cursor = idx + 1
		return a, nil
	}
	return netip.Addr{}, fmt.Errorf("%w among %d addresses from %s (ports %v)", ErrNoAddress, p.size, p.first, ports)
}

// Release returns a to the pool.
func (p *IPPool) Release(a netip.Addr) {
	p.mu.Lock()
	delete(p.used, a)
	p.mu.Unlock()
}

func portsFree(a netip.Addr, ports []int32) bool {
	for _, port := range ports {
		ln, err := net.Listen("tcp", net.JoinHostPort(a.String(), strconv.Itoa(int(port))))
		if err != nil {
			return false
		}
		_ = ln.Close()
	}
	return true
}

package subnet

import (
	"fmt"
	"slices"
)

// Visibility is how far a channel's traffic may propagate from the subnet
// it originates in.
type Visibility uint8

const (
	// Local traffic stays within the origin subnet (and below it).
	Local Visibility = iota
	// ParentVisible traffic also reaches the origin's parent subtree
	// (its siblings).
	ParentVisible
	// Exported traffic reaches the origin subtree plus the subnets the
	// gateway exports the channel to.
	Exported
	// GlobalVisible traffic goes anywhere.
	GlobalVisible
)

func (v Visibility) String() string {
	switch v {
	case Local:
		return "Local"
	case ParentVisible:
		return "ParentVisible"
	case Exported:
		return "Exported"
	case GlobalVisible:
		return "Global"
	}
	return fmt.Sprintf("Visibility(%d)", uint8(v))
}

// ParseVisibility reads a visibility name.
func ParseVisibility(s string) (Visibility, error) {
	for v := Local; v <= GlobalVisible; v++ {
		if v.String() == s {
			return v, nil
		}
	}
	return 0, fmt.Errorf("subnet: unknown visibility %q (want Local, ParentVisible, Exported or Global)", s)
}

// Gateway decides whether traffic crosses subnet boundaries.
type Gateway struct {
	exports map[string][]ID
}

// NewGateway returns a gateway that exports each channel to the listed
// subnets (for Exported visibility). Channel names must not be empty.
func NewGateway(exports map[string][]ID) (*Gateway, error) {
	g := &Gateway{exports: map[string][]ID{}}
	for ch, ids := range exports {
		if ch == "" {
			return nil, fmt.Errorf("subnet gateway: empty channel name")
		}
		for _, id := range ids {
			if _, err := FromUint32(uint32(id)); err != nil {
				return nil, fmt.Errorf("subnet gateway: channel %q: %w", ch, err)
			}
		}
		g.exports[ch] = slices.Clone(ids)
	}
	return g, nil
}

// Visible says whether traffic on channel, originating in origin with
// visibility v, may be forwarded to dest.
func (g *Gateway) Visible(channel string, origin, dest ID, v Visibility) bool {
	switch v {
	case GlobalVisible:
		return true
	case Local:
		return origin.Contains(dest)
	case ParentVisible:
		return origin.Parent().Contains(dest)
	case Exported:
		if origin.Contains(dest) {
			return true
		}
		if g == nil {
			return false
		}
		for _, e := range g.exports[channel] {
			if e.Contains(dest) {
				return true
			}
		}
	}
	return false // unknown visibility: fail closed
}

package identity

import (
	"fmt"
	"strings"
)

// Scope is the set of permissions a token grants, one bit each.
type Scope uint32

// The known scopes. A token's scope may carry bits this build does not
// know (a newer issuer); they grant nothing here because no requirement
// asks for them.
const (
	// ScopeAdmin allows the node's admin API (topology, moves, promote, drain).
	ScopeAdmin Scope = 1 << iota
	// ScopeIngest allows appending events through the data API.
	ScopeIngest
	// ScopeConsume allows polling events through the data API.
	ScopeConsume
	// ScopeReplicate allows a peer node to tail or push shard logs.
	ScopeReplicate

	scopeKnown = ScopeAdmin | ScopeIngest | ScopeConsume | ScopeReplicate
)

var scopeNames = [...]string{"admin", "ingest", "consume", "replicate"}

// Has reports whether s includes every bit of required.
func (s Scope) Has(required Scope) bool { return s&required == required }

// String lists the scope names joined by '|', with unknown bits in hex.
func (s Scope) String() string {
	if s == 0 {
		return "none"
	}
	var parts []string
	for i, name := range scopeNames {
		if s&(1<<i) != 0 {
			parts = append(parts, name)
		}
	}
	if rest := s &^ scopeKnown; rest != 0 {
		parts = append(parts, fmt.Sprintf("0x%x", uint32(rest)))
	}
	return strings.Join(parts, "|")
}

package wireapi

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/purplerain/mesh-operator/node/topology"
)

// Topology over the wire port, so a binary-only client needs no HTTP:
//
//	topology    (client) 4
//	topology ok (node)   0x84 ; then one frame: the topology as JSON (the
//	                     HTTP data API's GET /v1/topology body; fragmented
//	                     when larger than a packet)
//
// It needs a token granting ingest or consume when the server verifies
// tokens, and is refused with no_topology before the node's first topology.

func appendTopologyRequest(p *packets) error {
	if err := p.reserve(1); err != nil {
		return err
	}
	p.buf = append(p.buf, byte(kindTopology))
	return nil
}

func appendTopologyOK(p *packets, t *topology.Topology) error {
	data, err := json.Marshal(t)
	if err != nil {
		return fmt.Errorf("wireapi: encode topology: %w", err)
	}
	if err := p.reserve(1); err != nil {
		return err
	}
	p.buf = append(p.buf, byte(kindTopoOK))
	if len(data) > MaxFrame {
		return p.fragment(data)
	}
	if err := p.reserve(len(data)); err != nil {
		return err
	}
	p.buf = append(p.buf, data...)
	return nil
}

// Topology asks the node for its current topology.
func (c *Conn) Topology(ctx context.Context) (*topology.Topology, error) {
	frames, err := c.roundTrip(ctx, appendTopologyRequest)
	if err != nil {
		return nil, err
	}
	if msgKind(frames[0][0]) != kindTopoOK || len(frames) != 2 || len(frames[0]) != 1 {
		return nil, c.broken(fmt.Errorf("%w: unexpected answer to topology", ErrProtocol))
	}
	var t topology.Topology
	if err := json.Unmarshal(frames[1], &t); err != nil {
		return nil, c.broken(fmt.Errorf("%w: topology: %w", ErrProtocol, err))
	}
	return &t, nil
}

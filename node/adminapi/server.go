// Package adminapi serves a node's admin API: the HTTP/JSON surface the
// operator drives (DESIGN.md §5).
//
// Behaviour rules: GET /v1/rules lists the enforced rules with their hash
// (also in GET /v1/status); PUT /v1/rules replaces them at once, without a
// restart, keeping the rate windows of unchanged rules.
//
// Probes and metrics (/healthz, /readyz, /metrics) are open, as kubelets
// and Prometheus call them. Everything under /v1/ needs a permission token
// signed by the operator's key (header identity.HeaderName) with the admin
// scope; a missing or bad token gets 401 and an insufficient one 403, and
// neither changes anything. Errors are JSON {"error": "..."}.
//
// GET/PUT /v1/credentials read and replace the keys the node trusts and
// signs with, so the operator rotates them without a restart
// (credentials.go).
package adminapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/purplerain/mesh-operator/engine/identity"
	"github.com/purplerain/mesh-operator/engine/rules"
	"github.com/purplerain/mesh-operator/node"
	"github.com/purplerain/mesh-operator/node/topology"
)

// maxBody bounds request bodies: a topology of 65536 shards stays well
// under it.
const maxBody = 16 << 20

// Server is the admin API handler.
type Server struct {
	node     *node.Node
	verifier *identity.Verifier
	now      func() time.Time
	log      *slog.Logger
	mux      *http.ServeMux
	creds    credentialState // credentials.go
}

// Options configures a Server.
type Options struct {
	Node *node.Node
	// Verifier checks tokens; it trusts the operator's public key.
	Verifier *identity.Verifier
	// ReplicationVerifier, when set, is the replication server's: a
	// credential rotation (PUT /v1/credentials) replaces its trusted
	// cluster keys. The node's followers then trust only owners whose
	// handshake one of those keys signs (node.TrustOwnersSignedBy), so the
	// keys a node accepts followers with are the keys it follows owners
	// with, through every step of a rotation.
	ReplicationVerifier *identity.Verifier
	// Registry is where the node's metrics live; /metrics serves it.
	Registry *prometheus.Registry
	Now      func() time.Time
	Logger   *slog.Logger
}

// New returns the admin API handler.
func New(opts Options) (*Server, error) {
	if opts.Node == nil || opts.Verifier == nil || opts.Registry == nil {
		return nil, errors.New("adminapi: Node, Verifier and Registry are required")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{node: opts.Node, verifier: opts.Verifier, now: opts.Now, log: opts.Logger, mux: http.NewServeMux()}
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	s.mux.HandleFunc("GET /readyz", s.readyz)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(opts.Registry, promhttp.HandlerOpts{}))
	s.mux.Handle("GET /v1/status", s.admin(s.status))
	s.mux.Handle("PUT /v1/topology", s.admin(s.putTopology))
	s.mux.Handle("POST /v1/promote", s.admin(s.promote))
	s.mux.Handle("POST /v1/drain", s.admin(s.drain))
	s.mux.Handle("GET /v1/daemons", s.admin(s.daemons))
	s.creds.repl = opts.ReplicationVerifier
	if v := opts.ReplicationVerifier; v != nil {
		opts.Node.TrustOwnersSignedBy(v.Trusted)
	}
	s.registerCredentials()
	s.mux.Handle("GET /v1/rules", s.admin(s.getRules))
	s.mux.Handle("PUT /v1/rules", s.admin(s.putRules))
	return s, nil
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	if err := s.node.Ready(); err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ok")
}

// admin wraps h with token verification for the admin scope.
func (s *Server) admin(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		header := r.Header.Get(identity.HeaderName)
		if header == "" {
			writeError(w, http.StatusUnauthorized, errors.New("missing "+identity.HeaderName+" header"))
			return
		}
		if _, err := s.verifier.VerifyHeader(header, s.now(), identity.ScopeAdmin); err != nil {
			status := http.StatusUnauthorized
			if errors.Is(err, identity.ErrWrongScope) || errors.Is(err, identity.ErrWrongBinding) {
				status = http.StatusForbidden
			}
			s.log.Warn("admin request refused", "path", r.URL.Path, "err", err)
			writeError(w, status, err)
			return
		}
		h(w, r)
	})
}

// Status is the GET /v1/status answer.
type Status struct {
	Name string        `json:"name"`
	Role topology.Role `json:"role,omitempty"`
	// Epoch is the held topology's epoch, 0 before the first push.
	Epoch uint64 `json:"epoch"`
	// LeaseRemainingMillis is how long the node may still accept writes.
	LeaseRemainingMillis int64    `json:"leaseRemainingMillis"`
	Owned                []uint16 `json:"owned"`
	Followed             []uint16 `json:"followed"`
	Ready                bool     `json:"ready"`
	NotReadyReason       string   `json:"notReadyReason,omitempty"`
	// Shards details every owned and followed shard.
	Shards []node.ShardStatus `json:"shards,omitempty"`
	// Rules identifies the behaviour rules the node enforces.
	Rules RulesStatus `json:"rules"`
	// Subnet is the node's subnet ("3.7", "global"), empty when the
	// configuration assigns none; SubnetError says why an assignment
	// failed.
	Subnet      string `json:"subnet,omitempty"`
	SubnetError string `json:"subnetError,omitempty"`
}

// RulesStatus identifies a rule set: Hash is rules.Set.Hash, so the
// operator pushes only to nodes whose hash differs from the one it wants.
type RulesStatus struct {
	Hash  string `json:"hash"`
	Count int    `json:"count"`
}

// Rules is the GET /v1/rules answer: the enforced rules themselves.
type Rules struct {
	RulesStatus
	Rules []rules.Spec `json:"rules"`
}

func (s *Server) status(w http.ResponseWriter, _ *http.Request) {
	st := Status{Name: s.node.Name(), Role: s.node.Role(), Owned: []uint16{}, Followed: []uint16{}}
	if t := s.node.Topology(); t != nil {
		st.Epoch = t.Epoch
		st.Owned = append(st.Owned, t.OwnedBy(st.Name)...)
		st.Followed = append(st.Followed, t.FollowedBy(st.Name)...)
		st.LeaseRemainingMillis = max(s.node.LeaseRemaining().Milliseconds(), 0)
	}
	if err := s.node.Ready(); err != nil {
		st.NotReadyReason = err.Error()
	} else {
		st.Ready = true
	}
	st.Shards = s.node.ShardStatuses()
	set := s.node.Rules()
	st.Rules = RulesStatus{Hash: set.Hash(), Count: set.Len()}
	if id, ok, err := s.node.Subnet(); ok {
		st.Subnet = id.String()
	} else if err != nil {
		st.SubnetError = err.Error()
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *Server) getRules(w http.ResponseWriter, _ *http.Request) {
	set := s.node.Rules()
	specs := set.Specs()
	if specs == nil {
		specs = []rules.Spec{}
	}
	writeJSON(w, http.StatusOK, Rules{RulesStatus: RulesStatus{Hash: set.Hash(), Count: set.Len()}, Rules: specs})
}

// putRules replaces the enforced rules with the body (a JSON array of
// rules.Spec). It is idempotent: rules whose specification is unchanged
// keep their rate windows and counters (rules.Engine.Replace), so pushing
// the same set again changes nothing. An invalid set is refused whole
// (422, naming the rule) and the current rules stay.
func (s *Server) putRules(w http.ResponseWriter, r *http.Request) {
	data, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("read request body: %w", err))
		return
	}
	if len(data) > maxBody {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Errorf("rules: body larger than %d bytes", maxBody))
		return
	}
	set, err := rules.Parse(data)
	if err != nil {
		writeError(w, http.StatusUnprocessableEntity, err)
		return
	}
	before := s.node.Rules().Hash()
	s.node.SetRules(set)
	if before != set.Hash() {
		s.log.Info("rules replaced", "rules", set.Len(), "hash", set.Hash(), "previous", before)
	}
	writeJSON(w, http.StatusOK, RulesStatus{Hash: set.Hash(), Count: set.Len()})
}

// PromoteRequest is the body of POST /v1/promote.
type PromoteRequest struct {
	// Topology is the new topology, in which this node owns Shards.
	Topology topology.Topology `json:"topology"`
	Shards   []uint16          `json:"shards"`
}

func (s *Server) promote(w http.ResponseWriter, r *http.Request) {
	var req PromoteRequest
	if err := decode(r, &req); err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	if err := s.node.Promote(&req.Topology, req.Shards); err != nil {
		status := http.StatusUnprocessableEntity
		if errors.Is(err, topology.ErrStaleEpoch) {
			status = http.StatusConflict
		}
		writeError(w, status, err)
		return
	}
	s.log.Info("promoted", "epoch", req.Topology.Epoch, "shards", req.Shards)
	writeJSON(w, http.StatusOK, map[string]any{"epoch": req.Topology.Epoch, "shards": s.node.ShardStatuses()})
}

// Daemons is the GET /v1/daemons answer: every daemon instance the node
// hosts (owned and followed shards), with its state.
type Daemons struct {
	Name    string              `json:"name"`
	Epoch   uint64              `json:"epoch"`
	Daemons []node.DaemonStatus `json:"daemons"`
}

func (s *Server) daemons(w http.ResponseWriter, _ *http.Request) {
	d := Daemons{Name: s.node.Name(), Daemons: s.node.DaemonStatuses(true)}
	if t := s.node.Topology(); t != nil {
		d.Epoch = t.Epoch
	}
	writeJSON(w, http.StatusOK, d)
}

func (s *Server) drain(w http.ResponseWriter, r *http.Request) {
	st, err := s.node.Drain(r.Context())
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *Server) putTopology(w http.ResponseWriter, r *http.Request) {
	var t topology.Topology
	if err := decode(r, &t); err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	if err := s.node.ApplyTopology(&t); err != nil {
		status := http.StatusUnprocessableEntity
		if errors.Is(err, topology.ErrStaleEpoch) {
			status = http.StatusConflict
		}
		writeError(w, status, err)
		return
	}
	s.log.Info("topology applied", "epoch", t.Epoch, "owned", t.OwnedBy(s.node.Name()))
	writeJSON(w, http.StatusOK, map[string]uint64{"epoch": t.Epoch})
}

func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("decode request body: %w", err)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, err error) {
	writeJSON(w, status, map[string]string{"error": err.Error()})
}

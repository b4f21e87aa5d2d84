package dataapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/purplerain/mesh-operator/engine/identity"

	"github.com/purplerain/mesh-operator/node/refusal"
	"github.com/purplerain/mesh-operator/node/topology"
)

// Limits of one request.
const (
	MaxBatch     = 10_000
	maxBody      = 64 << 20
	MaxPollLimit = 10_000
)

// PollRequest is one poll: a page of at most Limit events from the shards
// the node owns, after Cursor.
type PollRequest struct {
	Cursor string
	Limit  int
}

// Backend is what the data API serves; the node implements it.
type Backend interface {
	// Topology is the current topology (nil before the first push).
	Topology() *topology.Topology
	// Ingest appends events and returns once they are acknowledged under
	// the cluster's ack policy. It is all or nothing for routing errors: if
	// any event belongs to a shard this node may not write, nothing is
	// ingested and the error says why.
	Ingest(ctx context.Context, events []Event) ([]Ack, error)
	// Poll reads a page from the shards this node owns.
	Poll(ctx context.Context, req PollRequest) (PollResponse, error)
}

// Server is the data API handler.
type Server struct {
	backend Backend
	log     *slog.Logger
	mux     *http.ServeMux
	auth    *tokenCache
}

// Options configures a Server.
type Options struct {
	Backend Backend
	Logger  *slog.Logger
	// Verifier, if set, makes every request need a token (see the package
	// doc); nil serves anyone.
	Verifier *identity.Verifier
	// Now is the clock tokens are checked against. Default time.Now.
	Now func() time.Time
}

// New returns the data API handler without authentication.
func New(b Backend, logger *slog.Logger) *Server {
	return NewServer(Options{Backend: b, Logger: logger})
}

// NewServer returns the data API handler.
func NewServer(o Options) *Server {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	s := &Server{backend: o.Backend, log: o.Logger, mux: http.NewServeMux()}
	if o.Verifier != nil {
		s.auth = &tokenCache{v: o.Verifier, now: o.Now, m: map[string]grant{}}
	}
	s.mux.HandleFunc("POST /v1/ingest", s.authorized(identity.ScopeIngest, s.ingest))
	s.mux.HandleFunc("GET /v1/poll", s.authorized(identity.ScopeConsume, s.poll))
	s.mux.HandleFunc("GET /v1/topology", s.authorized(0, s.topology))
	return s
}

// authorized wraps h with the token check for scope (0: ingest or
// consume).
func (s *Server) authorized(scope identity.Scope, h http.HandlerFunc) http.HandlerFunc {
	if s.auth == nil {
		return h
	}
	return func(w http.ResponseWriter, r *http.Request) {
		status, body := s.auth.check(r.Header.Get(identity.HeaderName), scope)
		if status != http.StatusOK {
			if status == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", identity.HeaderName)
			}
			writeError(w, status, body)
			return
		}
		h(w, r)
	}
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

func (s *Server) ingest(w http.ResponseWriter, r *http.Request) {
	var req IngestRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, ErrorResponse{Code: CodeBadRequest, Error: "decode ingest request: " + err.Error()})
		return
	}
	if len(req.Events) == 0 || len(req.Events) > MaxBatch {
		writeError(w, http.StatusBadRequest, ErrorResponse{Code: CodeBadRequest, Error: fmt.Sprintf("a batch holds 1 to %d events, got %d", MaxBatch, len(req.Events))})
		return
	}
	acks, err := s.backend.Ingest(r.Context(), req.Events)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, IngestResponse{Acks: acks})
}

func (s *Server) poll(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	req := PollRequest{Cursor: q.Get("cursor"), Limit: 100}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > MaxPollLimit {
			writeError(w, http.StatusBadRequest, ErrorResponse{Code: CodeBadRequest, Error: fmt.Sprintf("limit must be 1 to %d", MaxPollLimit)})
			return
		}
		req.Limit = n
	}
	resp, err := s.backend.Poll(r.Context(), req)
	if err != nil {
		s.fail(w, err)
		return
	}
	if resp.Events == nil {
		resp.Events = []StoredEvent{}
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) topology(w http.ResponseWriter, _ *http.Request) {
	t := s.backend.Topology()
	if t == nil {
		s.fail(w, refusal.ErrNoTopology)
		return
	}
	writeJSON(w, http.StatusOK, t)
}

// fail maps a backend error to its status code and error code.
func (s *Server) fail(w http.ResponseWriter, err error) {
	body := ErrorResponse{Error: err.Error()}
	status := http.StatusInternalServerError
	var notOwner *refusal.NotOwnerError
	var ruleErr *refusal.RuleRejectedError
	switch {
	case errors.As(err, &ruleErr):
		status, body.Code = http.StatusUnprocessableEntity, CodeRuleRejected
		if ruleErr.RateLimited {
			status = http.StatusTooManyRequests
		}
		body.Rule, body.Rules, body.RateLimited = ruleErr.Rule, ruleErr.Rules, ruleErr.RateLimited
	case errors.As(err, &notOwner):
		status, body.Code = http.StatusMisdirectedRequest, CodeNotOwner
		body.Shard, body.Owner, body.OwnerData = &notOwner.Shard, notOwner.Owner, notOwner.Data
	case errors.Is(err, refusal.ErrShardMoving):
		status, body.Code = http.StatusServiceUnavailable, CodeShardMoving
	case errors.Is(err, refusal.ErrLeaseExpired):
		status, body.Code = http.StatusServiceUnavailable, CodeLeaseExpired
	case errors.Is(err, refusal.ErrNoTopology):
		status, body.Code = http.StatusServiceUnavailable, CodeNoTopology
	case errors.Is(err, refusal.ErrBackpressure):
		status, body.Code = http.StatusServiceUnavailable, CodeBackpressure
	case errors.Is(err, refusal.ErrBehindRetention):
		status, body.Code = http.StatusGone, CodeBehindRetention
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		status, body.Code = http.StatusServiceUnavailable, CodeInternal
	default:
		body.Code = CodeInternal
		s.log.Error("data API request failed", "err", err)
	}
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	writeError(w, status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, body ErrorResponse) { writeJSON(w, status, body) }

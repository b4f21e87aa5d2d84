// Package clienttest holds test support for code that writes through the
// client SDK.
package clienttest

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"sync"

	"github.com/purplerain/mesh-operator/node/dataapi"
)

// SendCounter counts how often each event payload was sent to a node's
// ingest endpoint: it is an http.RoundTripper for HTTP sends, and its
// Count method is the client's OnBinarySend hook for binary sends. The
// SDK is at-least-once: an event sent once must be stored exactly once,
// one it had to resend (a node appended it but could not acknowledge it,
// its lease running out, or the connection broke) may be stored at most
// once per send, and never zero times once acknowledged. Tests compare
// stored copies against Sends.
type SendCounter struct {
	mu sync.Mutex
	n  map[string]int
}

// NewSendCounter returns an empty counter.
func NewSendCounter() *SendCounter { return &SendCounter{n: map[string]int{}} }

// RoundTrip counts the payloads of an ingest request, then sends it.
func (s *SendCounter) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodPost && req.URL.Path == "/v1/ingest" && req.Body != nil {
		body, err := io.ReadAll(req.Body)
		_ = req.Body.Close()
		if err != nil {
			return nil, err
		}
		var ir dataapi.IngestRequest
		if json.Unmarshal(body, &ir) == nil {
			s.mu.Lock()
			for _, e := range ir.Events {
				s.n[string(e.Payload)]++
			}
			s.mu.Unlock()
		}
		req = req.Clone(req.Context())
		req.Body = io.NopCloser(bytes.NewReader(body))
		req.ContentLength = int64(len(body))
	}
	return http.DefaultTransport.RoundTrip(req)
}

// Count counts events as sent once each: give it as client.Options
// OnBinarySend, so binary sends count as HTTP sends do.
func (s *SendCounter) Count(events []dataapi.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range events {
		s.n[string(e.Payload)]++
	}
}

// Sends is how often payload was sent (over HTTP through RoundTrip, or
// counted by Count).
func (s *SendCounter) Sends(payload string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n[payload]
}

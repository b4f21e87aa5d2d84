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

// SendCounter is an http.RoundTripper that counts how often each event
// payload was sent to a node's ingest endpoint. The SDK is at-least-once:
// an event sent once must be stored exactly once, one it had to resend (a
// node appended it but refused to acknowledge it, or the connection broke)
// may be stored at most once per send, and never zero times once
// acknowledged. Tests compare stored copies against Sends.
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

// Sends is how often payload was sent.
func (s *SendCounter) Sends(payload string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n[payload]
}

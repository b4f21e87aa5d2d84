package client

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/purplerain/mesh-operator/engine/rules"
)

// An ingest a node's behaviour rule refuses reaches the SDK caller as a
// typed error naming the rule, without retries.
func TestIngestRejectedByARuleReachesTheCallerWithTheRuleName(t *testing.T) {
	c := newCluster(t)
	c.push(t, 1, "a")
	set, err := rules.Parse([]byte(`[
		{"name":"big-counter","require":{"field":"count","op":"lt","value":9007199254740993}},
		{"name":"one-per-window","rateLimit":{"key":"device","max":1,"window":"1h"}}]`))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range c.nodes {
		n.SetRules(set)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl, err := New(ctx, Options{Addresses: []string{c.addrs["a"]}, RetryBase: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	key := keysFor(0, 1)[0]
	if _, err := cl.Ingest(ctx, Event{Key: key, Payload: []byte(`{"device":"d","count":9007199254740992}`)}); err != nil {
		t.Fatalf("valid event: %v", err)
	}
	// 2^53+1 rounds to 2^53 through float64 and would pass; exact
	// comparison refuses it.
	_, err = cl.Ingest(ctx, Event{Key: key, Payload: []byte(`{"device":"e","count":9007199254740993}`)})
	var re *RuleRejectedError
	if !errors.As(err, &re) || re.Rule != "big-counter" || re.RateLimited {
		t.Fatalf("want RuleRejectedError naming big-counter, got %v", err)
	}
	var ce *Error
	if !errors.As(err, &ce) || ce.Status != http.StatusUnprocessableEntity || ctx.Err() != nil {
		t.Fatalf("want the node's 422 at once, not a retry until the deadline: %v", err)
	}
	_, err = cl.Ingest(ctx, Event{Key: key, Payload: []byte(`{"device":"d","count":1}`)})
	if !errors.As(err, &re) || re.Rule != "one-per-window" || !re.RateLimited {
		t.Fatalf("want a rate-limited RuleRejectedError naming one-per-window, got %v", err)
	}
	if !errors.As(err, &ce) || ce.Status != http.StatusTooManyRequests {
		t.Fatalf("want 429, got %v", err)
	}
}

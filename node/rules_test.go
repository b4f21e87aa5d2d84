package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/purplerain/mesh-operator/engine/rules"
	"github.com/purplerain/mesh-operator/node/dataapi"
	"github.com/purplerain/mesh-operator/node/topology"
)

type rulesClock struct{ t time.Duration }

func (c *rulesClock) now() time.Duration { return c.t }

func mustRules(t testing.TB, js string) *rules.Set {
	t.Helper()
	s, err := rules.Parse([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func soleOwner(epoch uint64) *topology.Topology {
	return &topology.Topology{
		Cluster: "demo", Epoch: epoch, LeaseMillis: 60_000, BaseShards: 1,
		Members: []topology.Member{{Name: "a", Role: topology.Active, Data: "a:9441"}},
		Shards:  []topology.Shard{{ID: 0, Owner: "a"}},
	}
}

func postIngest(t *testing.T, url string, payloads ...string) (int, dataapi.ErrorResponse) {
	t.Helper()
	req := dataapi.IngestRequest{}
	for _, p := range payloads {
		req.Events = append(req.Events, dataapi.Event{Payload: []byte(p)})
	}
	body, _ := json.Marshal(req)
	resp, err := http.Post(url+"/v1/ingest", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e dataapi.ErrorResponse
	if resp.StatusCode != http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode, e
}

func ruleCounter(t *testing.T, n *Node, rule, reason string) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(n.NewCollector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "mesh_rule_refused_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["rule"] == rule && labels["reason"] == reason {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no counter for rule %q reason %q", rule, reason)
	return 0
}

// An ingest a rule refuses is refused whole over the data API with the
// rule's name, nothing of it is appended, and the rule's counter moves.
func TestIngestRejectedByARuleNamesTheRuleAndAppendsNothing(t *testing.T) {
	clock := &rulesClock{}
	n, err := New(Options{Name: "a", RulesClock: clock.now, Rules: mustRules(t, `[
		{"name":"speed-in-range","require":{"and":[{"field":"speed","op":"ge","value":0},{"field":"speed","op":"le","value":400}]}},
		{"name":"per-device","rateLimit":{"key":"device","max":2,"window":"1s"}}]`)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	if err := n.ApplyTopology(soleOwner(1)); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(dataapi.New(n, nil))
	t.Cleanup(srv.Close)

	if code, e := postIngest(t, srv.URL, `{"device":"d1","speed":120}`); code != http.StatusOK {
		t.Fatalf("valid event refused: %d %+v", code, e)
	}
	code, e := postIngest(t, srv.URL, `{"device":"d2","speed":10}`, `{"device":"d2","speed":9223372036854775808}`)
	if code != http.StatusUnprocessableEntity || e.Code != dataapi.CodeRuleRejected || e.Rule != "speed-in-range" || e.RateLimited {
		t.Fatalf("want 422 rule_rejected naming speed-in-range, got %d %+v", code, e)
	}
	code, e = postIngest(t, srv.URL, `{"device":"d1","speed":1}`, `{"device":"d1","speed":2}`)
	if code != http.StatusTooManyRequests || e.Code != dataapi.CodeRuleRejected || e.Rule != "per-device" || !e.RateLimited {
		t.Fatalf("want 429 rule_rejected naming per-device, got %d %+v", code, e)
	}
	resp, err := n.Poll(context.Background(), dataapi.PollRequest{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Events) != 1 || string(resp.Events[0].Payload) != `{"device":"d1","speed":120}` {
		t.Fatalf("refused requests left events behind: %d stored", len(resp.Events))
	}
	if got := ruleCounter(t, n, "speed-in-range", "rejected"); got != 1 {
		t.Fatalf("speed-in-range rejected counter = %v", got)
	}
	if got := ruleCounter(t, n, "per-device", "rate_limited"); got != 1 {
		t.Fatalf("per-device rate_limited counter = %v", got)
	}

	// A reload that keeps per-device unchanged keeps its window (d1 has one
	// event left) and its counters; the removed rule no longer applies.
	n.SetRules(mustRules(t, `[{"name":"per-device","rateLimit":{"key":"device","max":2,"window":"1s"}}]`))
	if code, e := postIngest(t, srv.URL, `{"device":"d1","speed":-5}`); code != http.StatusOK {
		t.Fatalf("after reload: %d %+v", code, e)
	}
	if code, _ := postIngest(t, srv.URL, `{"device":"d1"}`); code != http.StatusTooManyRequests {
		t.Fatalf("the reload reset an unchanged rule's window: %d", code)
	}
	if got := ruleCounter(t, n, "per-device", "rate_limited"); got != 2 {
		t.Fatalf("per-device counter after reload = %v, want 2", got)
	}
	clock.t += time.Second
	if code, e := postIngest(t, srv.URL, `{"device":"d1"}`); code != http.StatusOK {
		t.Fatalf("next window: %d %+v", code, e)
	}
}

func TestRuleRefusalIsATypedError(t *testing.T) {
	n, _ := newNode(t, "a")
	n.SetRules(mustRules(t, `[{"name":"has-id","require":{"field":"id","op":"exists"}}]`))
	if err := n.ApplyTopology(soleOwner(1)); err != nil {
		t.Fatal(err)
	}
	_, err := n.Ingest(context.Background(), []dataapi.Event{{Payload: []byte(`{"id":1}`)}, {Payload: []byte(`{}`)}})
	var re *RuleRejectedError
	if !errors.As(err, &re) || re.Rule != "has-id" || re.RateLimited {
		t.Fatalf("want RuleRejectedError naming has-id, got %v", err)
	}
	n.SetRules(nil)
	if _, err := n.Ingest(context.Background(), []dataapi.Event{{Payload: []byte(`{}`)}}); err != nil {
		t.Fatalf("without rules: %v", err)
	}
}

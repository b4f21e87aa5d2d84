package nodes

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/purplerain/mesh-operator/client"
	"github.com/purplerain/mesh-operator/engine/rules"
	"github.com/purplerain/mesh-operator/node/adminclient"
)

// An ingest a behaviour rule refuses reaches the SDK caller as a
// *client.RuleRejectedError naming the rule, over HTTP and over the binary
// transport: first with the rules the nodes load from their configuration
// file at start, then with rules the operator pushes to the running
// processes (PUT /v1/rules), which apply without a restart. The nodes
// count each refusal per rule in their Prometheus metrics.
func TestIngestRejectedByARuleReachesTheClientWithItsName(t *testing.T) {
	c := newCluster(t, 180, "Leader")
	// As a pod restarting on a ConfigMap with a rules section: the nodes
	// start with the rules in their configuration file.
	withRules(t, c.cfgPath, `[{"name":"speed-in-range","require":{"and":[
		{"field":"speed","op":"ge","value":0},{"field":"speed","op":"le","value":400}]}}]`)
	for _, m := range c.members {
		c.kill(m.Name)
		c.start(m.Name)
	}
	c.bootstrap()
	ctx := context.Background()

	transports := []struct {
		name string
		tr   client.Transport
	}{{"http", client.TransportHTTP}, {"binary", client.TransportBinary}}
	clients := map[string]*client.Client{}
	for _, tc := range transports {
		var addrs []string
		for _, m := range c.members {
			addrs = append(addrs, m.Data)
		}
		cl, err := client.New(ctx, client.Options{Addresses: addrs, Transport: tc.tr, Credentials: c.creds,
			RetryBase: 5 * time.Millisecond, RetryMax: 100 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cl.Close() })
		clients[tc.name] = cl
	}
	send := func(cl *client.Client, key, payload string) error {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		e := client.Event{Payload: []byte(payload)}
		if key != "" {
			e.Key = []byte(key)
		}
		_, err := cl.Ingest(cctx, e)
		return err
	}
	wantRefused := func(t *testing.T, err error, rule string, rateLimited bool) {
		t.Helper()
		var re *client.RuleRejectedError
		if !errors.As(err, &re) || re.Rule != rule || re.RateLimited != rateLimited {
			t.Fatalf("want a refusal by rule %q (rate limited: %v), got %v", rule, rateLimited, err)
		}
		if !strings.Contains(err.Error(), rule) {
			t.Fatalf("the error text does not name the rule: %v", err)
		}
	}

	for _, tc := range transports {
		t.Run("from the configuration/"+tc.name, func(t *testing.T) {
			cl := clients[tc.name]
			if err := send(cl, "", `{"speed":120}`); err != nil {
				t.Fatalf("a valid event was refused: %v", err)
			}
			wantRefused(t, send(cl, "", `{"speed":900}`), "speed-in-range", false)
			// A key routes to one owner: the same holds there.
			wantRefused(t, send(cl, "veh-7", `{"speed":-1}`), "speed-in-range", false)
		})
	}
	if got := refusedTotal(t, c, "speed-in-range", "rejected"); got != 4 {
		t.Fatalf("mesh_rule_refused_requests_total{rule=speed-in-range,reason=rejected} summed over the nodes = %v, want 4", got)
	}

	// The operator pushes new rules to the running processes.
	pids := map[string]int{}
	c.mu.Lock()
	for name, p := range c.procs {
		pids[name] = p.cmd.Process.Pid
	}
	c.mu.Unlock()
	var specs []rules.Spec
	if err := json.Unmarshal([]byte(`[
		{"name":"speed-in-range","require":{"field":"speed","op":"le","value":1000}},
		{"name":"one-per-device","rateLimit":{"key":"device","max":1,"window":"1h"}}]`), &specs); err != nil {
		t.Fatal(err)
	}
	for _, m := range c.members {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if _, err := c.driver.Dial(m.Admin).(adminclient.RulesClient).PutRules(cctx, specs); err != nil {
			cancel()
			t.Fatalf("push rules to %s: %v", m.Name, err)
		}
		cancel()
	}
	// Every node reports the pushed set's hash, as the operator compares it.
	want, err := rules.Compile(specs)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range c.members {
		if got := metricValue(t, m.Admin, `mesh_rules_active{hash="`+want.Hash()+`"} `); got != 2 {
			t.Fatalf("%s: mesh_rules_active for hash %s = %v, want 2", m.Name, want.Hash(), got)
		}
	}
	for _, tc := range transports {
		t.Run("pushed/"+tc.name, func(t *testing.T) {
			cl := clients[tc.name]
			device := "dev-" + tc.name
			payload := `{"speed":900,"device":"` + device + `"}`
			if err := send(cl, device, payload); err != nil {
				t.Fatalf("an event the pushed rules accept was refused: %v", err)
			}
			wantRefused(t, send(cl, device, payload), "one-per-device", true)
			wantRefused(t, send(cl, "", `{"speed":1500}`), "speed-in-range", false)
		})
	}
	c.mu.Lock()
	for name, p := range c.procs {
		if pids[name] != p.cmd.Process.Pid {
			t.Errorf("%s was restarted by the rules push", name)
		}
	}
	c.mu.Unlock()
	if got := refusedTotal(t, c, "one-per-device", "rate_limited"); got != 2 {
		t.Fatalf("mesh_rule_refused_requests_total{rule=one-per-device,reason=rate_limited} = %v, want 2", got)
	}
	// Counters are kept by rule name across the reload.
	if got := refusedTotal(t, c, "speed-in-range", "rejected"); got != 6 {
		t.Fatalf("speed-in-range rejected after the push = %v, want 6", got)
	}
}

// withRules adds a rules section to the node configuration file at path.
func withRules(t *testing.T, path, rulesJSON string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	doc["rules"] = json.RawMessage(rulesJSON)
	if data, err = json.Marshal(doc); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// refusedTotal sums a rule's refusal counter over every node's /metrics.
func refusedTotal(t *testing.T, c *cluster, rule, reason string) float64 {
	t.Helper()
	var sum float64
	for _, m := range c.members {
		sum += metricValue(t, m.Admin, `mesh_rule_refused_requests_total{reason="`+reason+`",rule="`+rule+`"} `)
	}
	return sum
}

// metricValue reads the sample whose line starts with prefix (name and
// labels) from a node's /metrics, 0 when absent.
func metricValue(t *testing.T, admin, prefix string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), prefix); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	return 0
}

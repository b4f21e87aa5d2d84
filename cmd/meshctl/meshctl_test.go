package main

import (
	"bytes"
	"context"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/purplerain/mesh-operator/client"
	"github.com/purplerain/mesh-operator/engine/adapter"
	"github.com/purplerain/mesh-operator/engine/consumer"
	"github.com/purplerain/mesh-operator/node/topology"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParseIngest(t *testing.T) {
	t.Setenv("MESHCTL_ADDRESSES", "")
	a, err := parseIngest([]string{"--addresses", " 127.0.0.10:9441, 127.0.0.11:9441 ,", "--count", "5000", "--batch", "250", "--key-prefix", "user-", "--keys", "7", "--transport", "binary", "--token-file", "/tmp/t"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"127.0.0.10:9441", "127.0.0.11:9441"}; !equal(a.Addresses, want) {
		t.Errorf("addresses = %q, want %q", a.Addresses, want)
	}
	if a.Count != 5000 || a.Batch != 250 || a.KeyPrefix != "user-" || a.Keys != 7 || a.Transport != client.TransportBinary || a.TokenFile != "/tmp/t" || a.Timeout != 2*time.Minute {
		t.Errorf("parsed %+v", a)
	}

	a, err = parseIngest([]string{"--addresses=h:1"}, io.Discard)
	if err != nil || a.Count != 1000 || a.Batch != 100 || a.Keys != 100 || a.KeyPrefix != "key-" || a.Transport != client.TransportHTTP {
		t.Errorf("defaults: %+v, %v", a, err)
	}

	t.Setenv("MESHCTL_ADDRESSES", "10.0.0.1:9441")
	t.Setenv("MESHCTL_CREDENTIALS", "/state/demo-data-key.json")
	if a, err := parseIngest(nil, io.Discard); err != nil || !equal(a.Addresses, []string{"10.0.0.1:9441"}) || a.Credentials != "/state/demo-data-key.json" {
		t.Errorf("$MESHCTL_ADDRESSES and $MESHCTL_CREDENTIALS not used: %+v, %v", a, err)
	}
}

func TestParseRejectsBadCommandLines(t *testing.T) {
	t.Setenv("MESHCTL_ADDRESSES", "")
	parsers := map[string]func([]string, io.Writer) error{
		"ingest":   func(a []string, w io.Writer) error { _, err := parseIngest(a, w); return err },
		"poll":     func(a []string, w io.Writer) error { _, err := parsePoll(a, w); return err },
		"topology": func(a []string, w io.Writer) error { _, err := parseTopology(a, w); return err },
	}
	for _, tc := range []struct {
		name, cmd string
		args      []string
		want      string
	}{
		{"no address", "ingest", nil, "names no node"},
		{"address without port", "ingest", []string{"--addresses", "127.0.0.10"}, "not host:port"},
		{"address without host", "ingest", []string{"--addresses", "127.0.0.10:9441,:9441"}, "not host:port"},
		{"address with a bad port", "poll", []string{"--addresses", "127.0.0.10:944l"}, "not host:port"},
		{"address with port 0", "topology", []string{"--addresses", "127.0.0.10:0"}, "not host:port"},
		{"zero count", "ingest", []string{"--addresses", "h:1", "--count", "0"}, "--count"},
		{"zero batch", "ingest", []string{"--addresses", "h:1", "--batch", "0"}, "--batch"},
		{"negative keys", "ingest", []string{"--addresses", "h:1", "--keys", "-1"}, "--keys"},
		{"negative size", "ingest", []string{"--addresses", "h:1", "--size", "-1"}, "--size"},
		{"unknown transport", "ingest", []string{"--addresses", "h:1", "--transport", "grpc"}, "--transport"},
		{"unknown flag", "ingest", []string{"--addresses", "h:1", "--nope"}, "nope"},
		{"stray argument", "topology", []string{"--addresses", "h:1", "extra"}, "unexpected argument"},
		{"zero timeout", "topology", []string{"--addresses", "h:1", "--timeout", "0s"}, "--timeout"},
		{"shard out of range", "poll", []string{"--addresses", "h:1", "--shard", "70000"}, "--shard"},
		{"bad from", "poll", []string{"--addresses", "h:1", "--from", "not-a-cursor!"}, "--from"},
		{"zero page", "poll", []string{"--addresses", "h:1", "--page", "0"}, "--page"},
		{"negative limit", "poll", []string{"--addresses", "h:1", "--limit", "-1"}, "--limit"},
		{"credentials and token", "poll", []string{"--addresses", "h:1", "--credentials", "c.json", "--token-file", "t"}, "not both"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := parsers[tc.cmd](tc.args, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one mentioning %q", err, tc.want)
			}
			var stderr bytes.Buffer
			if code := run(context.Background(), append([]string{tc.cmd}, tc.args...), io.Discard, &stderr); code != 2 {
				t.Errorf("run exit status %d, want 2 (usage); stderr %q", code, stderr.String())
			}
		})
	}
}

func TestParsePollFrom(t *testing.T) {
	a, err := parsePoll([]string{"--addresses", "h:1", "--shard", "3", "--from", "17"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	c, err := consumer.Decode(a.From)
	if err != nil || c.Position(3).Lo != 17 || len(c.Shards()) != 1 || a.AllFrom {
		t.Errorf("--shard 3 --from 17: cursor %q (%v), AllFrom %v", a.From, err, a.AllFrom)
	}

	a, err = parsePoll([]string{"--addresses", "h:1", "--from", "17"}, io.Discard)
	if err != nil || !a.AllFrom || a.FromSeq != 17 || a.From != "" {
		t.Errorf("--from 17 on every shard: %+v, %v", a, err)
	}

	cur := &consumer.Cursor{}
	cur.Advance(5, adapter.Position{Lo: 9})
	enc, err := cur.Encode()
	if err != nil {
		t.Fatal(err)
	}
	a, err = parsePoll([]string{"--addresses", "h:1", "--from", enc}, io.Discard)
	if err != nil || a.From != enc || a.AllFrom {
		t.Errorf("--from <cursor>: %+v, %v", a, err)
	}
}

func TestRunUsage(t *testing.T) {
	var stderr bytes.Buffer
	if code := run(context.Background(), nil, io.Discard, &stderr); code != 2 || !strings.Contains(stderr.String(), "ingest") {
		t.Errorf("no command: exit %d, %q", code, stderr.String())
	}
	if code := run(context.Background(), []string{"frobnicate"}, io.Discard, io.Discard); code != 2 {
		t.Errorf("unknown command: exit %d", code)
	}
	if code := run(context.Background(), []string{"poll", "-h"}, io.Discard, io.Discard); code != 0 {
		t.Errorf("poll -h: exit %d", code)
	}
}

func equal(a, b []string) bool { return strings.Join(a, "\x00") == strings.Join(b, "\x00") }

// topology shows which added shard drains, so autoscaling's work is
// visible where the shards are listed.
func TestPrintTopologyShowsDrainingShards(t *testing.T) {
	top := &topology.Topology{Cluster: "c", Epoch: 9, LeaseMillis: 5000, BaseShards: 1,
		Members: []topology.Member{{Name: "a", Role: topology.Active, Data: "h:1"}},
		Shards:  []topology.Shard{{ID: 0, Owner: "a"}, {ID: 1, Owner: "a", Draining: true}, {ID: 2, Owner: "a"}}}
	var out bytes.Buffer
	printTopology(&out, top)
	for _, want := range []string{`(?m)^SHARD\s+OWNER\s+FOLLOWERS\s+FENCED\s+DRAINING$`, `(?m)^1\s+a\s+-\s+false\s+true$`, `(?m)^2\s+a\s+-\s+false\s+false$`} {
		if !regexp.MustCompile(want).MatchString(out.String()) {
			t.Errorf("topology output does not match %q:\n%s", want, out.String())
		}
	}
}

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/purplerain/mesh-operator/engine/identity"
	"github.com/purplerain/mesh-operator/node/adminclient"
	nodeconfig "github.com/purplerain/mesh-operator/node/config"
	"github.com/purplerain/mesh-operator/node/runtime"
	"github.com/purplerain/mesh-operator/node/topology"
)

// startNodes runs two actives and one standby (node/runtime, in process)
// on 127.0.8.<base>..<base+2>, pushes the initial topology the operator
// would record, and returns the data API addresses and the cluster's data
// credentials as the operator makes them (granted by its key).
func startNodes(t *testing.T, base int) (data []string, topo *topology.Topology, creds *identity.DataCredentials) {
	t.Helper()
	dir := t.TempDir()
	op, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	ck, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := op.MarshalPublicKeyPEM()
	priv, _ := ck.MarshalPrivateKeyPEM()
	for name, b := range map[string][]byte{"operator.pub": pub, "cluster.key": priv} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := &nodeconfig.Config{
		Cluster: "meshctl", Shards: 4, AckPolicy: "Standby",
		Lease:       nodeconfig.Duration{Duration: 10 * time.Minute},
		Storage:     nodeconfig.Storage{Mode: "Memory", Fsync: "Never"},
		Credentials: nodeconfig.Credentials{OperatorPublicKey: filepath.Join(dir, "operator.pub"), ClusterKey: filepath.Join(dir, "cluster.key")},
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	var members []topology.Member
	for i, name := range []string{"a0", "a1", "s0"} {
		role := topology.Active
		if name == "s0" {
			role = topology.Standby
		}
		host := fmt.Sprintf("127.0.8.%d", base+i)
		hp := func(port int) string { return net.JoinHostPort(host, strconv.Itoa(port)) }
		members = append(members, topology.Member{Name: name, Role: role, Admin: hp(nodeconfig.AdminPort), Data: hp(nodeconfig.DataPort), Wire: hp(nodeconfig.WirePort)})
		data = append(data, hp(nodeconfig.DataPort))
	}
	for _, m := range members {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		ready := make(chan struct{})
		go func() {
			done <- runtime.Run(ctx, runtime.Options{
				Config: cfg, Name: m.Name, AdminAddr: m.Admin, DataAddr: m.Data, WireAddr: m.Wire,
				DrainTimeout: time.Second, Logger: slog.New(slog.DiscardHandler),
				Ready: func(_, _, _ net.Addr) { close(ready) },
			})
		}()
		select {
		case <-ready:
		case err := <-done:
			cancel()
			t.Fatalf("node %s did not start: %v", m.Name, err)
		}
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("node %s: %v", m.Name, err)
			}
		})
	}
	if creds, err = identity.NewDataCredentials(op, time.Hour, time.Now()); err != nil {
		t.Fatal(err)
	}
	topo, err = topology.Initial("meshctl", members, cfg.Shards, cfg.Lease.Milliseconds())
	if err != nil {
		t.Fatal(err)
	}
	dial := adminclient.NewHTTPDialer(op, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, m := range members {
		if err := dial(m.Admin).PutTopology(ctx, topo); err != nil {
			t.Fatalf("push topology to %s: %v", m.Name, err)
		}
	}
	return data, topo, creds
}

func meshctl(t *testing.T, args ...string) (string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(context.Background(), args, &out, &errOut)
	if errOut.Len() > 0 {
		t.Logf("meshctl %s: stderr: %s", strings.Join(args, " "), errOut.String())
	}
	return out.String(), code
}

func matchInt(t *testing.T, out, pattern string) int {
	t.Helper()
	m := regexp.MustCompile(pattern).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("output does not match %q:\n%s", pattern, out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// TestIngestPollAndTopologyAgainstRealNodes runs the commands the demo
// runs against real nodes: every acknowledged event is read back, the
// per-shard counts of ingest and poll agree, --shard and --from select
// what they say, and topology shows the placement the nodes serve.
func TestIngestPollAndTopologyAgainstRealNodes(t *testing.T) {
	data, topo, creds := startNodes(t, 10)
	secretJSON := writeSecretJSON(t, creds)
	// The standby first: any node tells the topology.
	addrs := "--addresses=" + data[2] + "," + data[0]

	// The nodes authenticate the data API: without credentials the
	// command says so.
	var stderr bytes.Buffer
	if code := run(context.Background(), []string{"topology", addrs}, io.Discard, &stderr); code != 1 || !strings.Contains(stderr.String(), "401") {
		t.Fatalf("topology without credentials: exit %d, %q; want 1 and the 401", code, stderr.String())
	}
	mc := func(cmd string, more ...string) (string, int) {
		return meshctl(t, append([]string{cmd, addrs, "--credentials=" + secretJSON}, more...)...)
	}

	out, code := mc("ingest", "--count", "3000", "--batch", "250", "--keys", "50", "--key-prefix", "user-")
	if code != 0 {
		t.Fatalf("ingest exit %d:\n%s", code, out)
	}
	if acked := matchInt(t, out, `acknowledged (\d+) of 3000 events`); acked != 3000 {
		t.Fatalf("acknowledged %d, want 3000:\n%s", acked, out)
	}
	ingestShards := regexp.MustCompile(`per shard: (.*)`).FindStringSubmatch(out)[1]

	out, code = mc("poll", "--quiet", "--page", "400")
	if code != 0 {
		t.Fatalf("poll exit %d:\n%s", code, out)
	}
	if read := matchInt(t, out, `read (\d+) events from every shard`); read != 3000 {
		t.Fatalf("poll read %d events, want the 3000 acknowledged:\n%s", read, out)
	}
	if got := regexp.MustCompile(`per shard: (.*)`).FindStringSubmatch(out)[1]; got != ingestShards {
		t.Errorf("per-shard counts: poll %q, ingest %q", got, ingestShards)
	}
	cursor := regexp.MustCompile(`cursor: (\S+)`).FindStringSubmatch(out)[1]

	// Resuming from the printed cursor reads only what came after it;
	// over the binary transport with the credentials as a mounted Secret
	// directory, and with a token file.
	credsDir := writeSecretDir(t, creds)
	if out, code = meshctl(t, "ingest", addrs, "--credentials", credsDir, "--count", "10", "--transport", "binary"); code != 0 {
		t.Fatalf("binary ingest exit %d:\n%s", code, out)
	}
	out, code = meshctl(t, "poll", addrs, "--token-file", writeToken(t, creds), "--from", cursor, "--transport", "binary")
	if code != 0 || matchInt(t, out, `read (\d+) events`) != 10 {
		t.Fatalf("poll --from <cursor> (exit %d) should read the 10 new events:\n%s", code, out)
	}

	// One shard, from a sequence number: every printed event is of that
	// shard and at or after the sequence.
	out, code = mc("poll", "--shard", "1")
	if code != 0 {
		t.Fatalf("poll --shard 1 exit %d:\n%s", code, out)
	}
	seqs := eventSeqs(t, out, 1)
	if len(seqs) < 20 {
		t.Fatalf("shard 1 holds only %d events", len(seqs))
	}
	from := seqs[10]
	out, code = mc("poll", "--shard", "1", "--from", strconv.FormatUint(from, 10))
	if code != 0 {
		t.Fatalf("poll --shard 1 --from %d exit %d:\n%s", from, code, out)
	}
	got := eventSeqs(t, out, 1)
	if len(got) != len(seqs)-10 || got[0] != from {
		t.Errorf("--shard 1 --from %d read %d events starting at %v; want %d starting at %d", from, len(got), got[:min(1, len(got))], len(seqs)-10, from)
	}
	out, code = mc("poll", "--shard", "1", "--limit", "5", "--quiet")
	if code != 0 || matchInt(t, out, `read (\d+) events from shard 1`) != 5 {
		t.Errorf("--limit 5 (exit %d):\n%s", code, out)
	}

	out, code = mc("topology")
	if code != 0 {
		t.Fatalf("topology exit %d:\n%s", code, out)
	}
	for _, want := range []string{
		`cluster meshctl, epoch 1, 4 base shards`,
		`(?m)^a0\s+active\s+` + regexp.QuoteMeta(data[0]) + `\s+\S+\s+0,2$`,
		`(?m)^s0\s+standby\s+` + regexp.QuoteMeta(data[2]) + `\s+\S+\s+-$`,
		`(?m)^1\s+a1\s+s0\s+false\s+false$`,
	} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("topology output does not match %q:\n%s", want, out)
		}
	}
	out, code = mc("topology", "--json")
	var back topology.Topology
	if err := json.Unmarshal([]byte(out), &back); code != 0 || err != nil || back.Epoch != topo.Epoch || len(back.Shards) != len(topo.Shards) {
		t.Errorf("topology --json (exit %d, %v):\n%s", code, err, out)
	}
}

func writeSecretJSON(t *testing.T, creds *identity.DataCredentials) string {
	t.Helper()
	data, err := creds.SecretData()
	if err != nil {
		t.Fatal(err)
	}
	// As kubectl get secret -o json prints it: base64 values.
	b, err := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "Secret", "metadata": map[string]string{"name": "meshctl-data-key"}, "data": data})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "secret.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// writeSecretDir lays the Secret out as the kubelet mounts it: keys as
// symlinks into a ..data directory.
func writeSecretDir(t *testing.T, creds *identity.DataCredentials) string {
	t.Helper()
	data, err := creds.SecretData()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "..2026_01_01"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..2026_01_01", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for k, v := range data {
		if err := os.WriteFile(filepath.Join(dir, "..2026_01_01", k), v, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join("..data", k), filepath.Join(dir, k)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// writeToken writes a delegated data token in the Mesh-Token header form.
func writeToken(t *testing.T, creds *identity.DataCredentials) string {
	t.Helper()
	tok, err := creds.Token(identity.DataScope, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(path, []byte(tok.EncodeHeader()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// eventSeqs parses the event table of poll and checks every row is of shard.
func eventSeqs(t *testing.T, out string, shard int) []uint64 {
	t.Helper()
	var seqs []uint64
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || f[0] == "SHARD" {
			continue
		}
		s, err1 := strconv.Atoi(f[0])
		seq, err2 := strconv.ParseUint(f[1], 10, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		if s != shard {
			t.Errorf("event of shard %d in a poll of shard %d: %q", s, shard, sc.Text())
		}
		seqs = append(seqs, seq)
	}
	return seqs
}

func TestIngestReportsWhenNoNodeAnswers(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.8.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close() // nothing listens there now
	var stderr bytes.Buffer
	code := run(context.Background(), []string{"ingest", "--addresses", addr, "--count", "1", "--timeout", "5s"}, io.Discard, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "reach the cluster at "+addr) {
		t.Errorf("exit %d, stderr %q; want 1 and a message naming the address", code, stderr.String())
	}
}

package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/purplerain/mesh-operator/client"
	"github.com/purplerain/mesh-operator/engine/adapter"
	"github.com/purplerain/mesh-operator/engine/consumer"
	"github.com/purplerain/mesh-operator/engine/identity"
	"github.com/purplerain/mesh-operator/node/topology"
)

// errUsage marks a command line that cannot run; run exits 2 for it.
var errUsage = errors.New("usage")

const usageText = `usage: meshctl <command> [flags]

commands:
  ingest    send generated events and report how many were acknowledged
  poll      read events back (every shard, one composite cursor)
  topology  show the members and shard placement the nodes serve

Run 'meshctl <command> -h' for a command's flags.`

// common are the flags every command takes.
type common struct {
	Addresses []string
	Transport client.Transport
	// Credentials is a directory holding the cluster's data Secret as
	// files (a mounted Secret) or a file holding the Secret as JSON ("-":
	// stdin).
	Credentials string
	// TokenFile holds a data-API token (header or binary form).
	TokenFile string
	Timeout   time.Duration
}

type ingestArgs struct {
	common
	Count, Keys, Batch, Size int
	KeyPrefix                string
}

type pollArgs struct {
	common
	Shard int // -1: every shard
	// From is the encoded cursor to start at ("": the beginning), or,
	// with AllFrom set, every shard starts at sequence FromSeq (the shards
	// are known only once the topology is).
	From    string
	AllFrom bool
	FromSeq uint64
	Limit   int // 0: until caught up
	Page    int
	Quiet   bool
}

type topologyArgs struct {
	common
	JSON bool
}

// run executes one meshctl command line and returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintln(stderr, usageText)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	var err error
	switch args[0] {
	case "ingest":
		var a ingestArgs
		if a, err = parseIngest(args[1:], stderr); err == nil {
			err = ingest(ctx, a, stdout)
		}
	case "poll":
		var a pollArgs
		if a, err = parsePoll(args[1:], stderr); err == nil {
			err = poll(ctx, a, stdout)
		}
	case "topology":
		var a topologyArgs
		if a, err = parseTopology(args[1:], stderr); err == nil {
			err = showTopology(ctx, a, stdout)
		}
	default:
		fmt.Fprintf(stderr, "meshctl: unknown command %q\n%s\n", args[0], usageText)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintln(stderr, "meshctl:", err)
		return 2
	default:
		fmt.Fprintln(stderr, "meshctl:", err)
		return 1
	}
}

func newFlagSet(name string, stderr io.Writer, c *common) (*flag.FlagSet, *string, *string) {
	fs := flag.NewFlagSet("meshctl "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	addrs := fs.String("addresses", os.Getenv("MESHCTL_ADDRESSES"), "comma-separated data API addresses (host:port) of any nodes; default $MESHCTL_ADDRESSES")
	transport := fs.String("transport", "http", "how ingest and poll travel: http (JSON data API, port 9441) or binary (wire port 9442)")
	fs.StringVar(&c.Credentials, "credentials", os.Getenv("MESHCTL_CREDENTIALS"), "the cluster's data credentials (the <cluster>-data-key Secret): a directory with one file per key (a mounted Secret) or a file with the Secret as JSON (kubectl get secret -o json), - for stdin; default $MESHCTL_CREDENTIALS")
	fs.StringVar(&c.TokenFile, "token-file", "", "file holding a data-API token (Mesh-Token header form or binary form), instead of --credentials")
	fs.DurationVar(&c.Timeout, "timeout", 2*time.Minute, "give up after this long")
	return fs, addrs, transport
}

// finish parses args into fs and checks the common flags.
func finish(fs *flag.FlagSet, args []string, c *common, addrs, transport *string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	for a := range strings.SplitSeq(*addrs, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		// An empty host would dial this machine (demo.sh builds the list
		// from pod IPs, empty while a pod has none), and a port must be a
		// number: a typo is a usage error, not a failed dial.
		host, port, err := net.SplitHostPort(a)
		if p, perr := strconv.ParseUint(port, 10, 16); err != nil || host == "" || perr != nil || p == 0 {
			return fmt.Errorf("%w: address %q is not host:port", errUsage, a)
		}
		c.Addresses = append(c.Addresses, a)
	}
	if len(c.Addresses) == 0 {
		return fmt.Errorf("%w: --addresses (or $MESHCTL_ADDRESSES) names no node", errUsage)
	}
	switch *transport {
	case "http":
		c.Transport = client.TransportHTTP
	case "binary":
		c.Transport = client.TransportBinary
	default:
		return fmt.Errorf("%w: --transport %q: want http or binary", errUsage, *transport)
	}
	if c.Timeout <= 0 {
		return fmt.Errorf("%w: --timeout must be positive", errUsage)
	}
	if c.Credentials != "" && c.TokenFile != "" {
		return fmt.Errorf("%w: give --credentials or --token-file, not both", errUsage)
	}
	return nil
}

func parseIngest(args []string, stderr io.Writer) (ingestArgs, error) {
	var a ingestArgs
	fs, addrs, tr := newFlagSet("ingest", stderr, &a.common)
	fs.IntVar(&a.Count, "count", 1000, "events to send")
	fs.IntVar(&a.Keys, "keys", 100, "distinct keys, used in turn (0: keyless events, spread over the owners)")
	fs.StringVar(&a.KeyPrefix, "key-prefix", "key-", "keys are <prefix><n>")
	fs.IntVar(&a.Batch, "batch", 100, "events per ingest request")
	fs.IntVar(&a.Size, "size", 0, "pad each JSON payload to at least this many bytes")
	if err := finish(fs, args, &a.common, addrs, tr); err != nil {
		return a, err
	}
	switch {
	case a.Count < 1:
		return a, fmt.Errorf("%w: --count must be at least 1", errUsage)
	case a.Keys < 0:
		return a, fmt.Errorf("%w: --keys must not be negative", errUsage)
	case a.Batch < 1:
		return a, fmt.Errorf("%w: --batch must be at least 1", errUsage)
	case a.Size < 0:
		return a, fmt.Errorf("%w: --size must not be negative", errUsage)
	}
	return a, nil
}

func parsePoll(args []string, stderr io.Writer) (pollArgs, error) {
	var a pollArgs
	fs, addrs, tr := newFlagSet("poll", stderr, &a.common)
	fs.IntVar(&a.Shard, "shard", -1, "only this shard's events (-1: every shard)")
	from := fs.String("from", "", "where to start: a cursor printed by an earlier poll, or a sequence number (every shard, or --shard's, from that sequence on); default the beginning")
	fs.IntVar(&a.Limit, "limit", 0, "stop after this many events (0: read until caught up)")
	fs.IntVar(&a.Page, "page", 500, "events per poll request")
	fs.BoolVar(&a.Quiet, "quiet", false, "print only the counts and the cursor, not the events")
	if err := finish(fs, args, &a.common, addrs, tr); err != nil {
		return a, err
	}
	switch {
	case a.Shard < -1 || a.Shard > 65535:
		return a, fmt.Errorf("%w: --shard %d out of range", errUsage, a.Shard)
	case a.Limit < 0:
		return a, fmt.Errorf("%w: --limit must not be negative", errUsage)
	case a.Page < 1:
		return a, fmt.Errorf("%w: --page must be at least 1", errUsage)
	}
	if *from == "" {
		return a, nil
	}
	if seq, err := strconv.ParseUint(*from, 10, 64); err == nil {
		if a.Shard < 0 {
			a.AllFrom, a.FromSeq = true, seq
			return a, nil
		}
		c := &consumer.Cursor{}
		c.Advance(uint16(a.Shard), adapter.Position{Lo: seq})
		a.From, err = c.Encode()
		return a, err
	}
	if _, err := consumer.Decode(*from); err != nil {
		return a, fmt.Errorf("%w: --from %q is neither a sequence number nor a cursor: %v", errUsage, *from, err)
	}
	a.From = *from
	return a, nil
}

func parseTopology(args []string, stderr io.Writer) (topologyArgs, error) {
	var a topologyArgs
	fs, addrs, tr := newFlagSet("topology", stderr, &a.common)
	fs.BoolVar(&a.JSON, "json", false, "print the topology as JSON")
	return a, finish(fs, args, &a.common, addrs, tr)
}

// connect builds the SDK client. The caller closes it and the returned
// transport's idle connections.
func connect(ctx context.Context, c common) (*client.Client, func(), error) {
	opts := client.Options{Addresses: c.Addresses, Transport: c.Transport}
	var err error
	if c.TokenFile != "" {
		if opts.Token, err = readToken(c.TokenFile); err != nil {
			return nil, nil, err
		}
	}
	if c.Credentials != "" {
		if opts.Credentials, err = readCredentials(c.Credentials); err != nil {
			return nil, nil, err
		}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	opts.HTTPClient = &http.Client{Transport: tr, Timeout: 30 * time.Second}
	cl, err := client.New(ctx, opts)
	if err != nil {
		tr.CloseIdleConnections()
		return nil, nil, fmt.Errorf("reach the cluster at %s: %w", strings.Join(c.Addresses, ","), err)
	}
	return cl, func() { _ = cl.Close(); tr.CloseIdleConnections() }, nil
}

// readToken reads a token file in the Mesh-Token header form (text) or the
// binary form, and returns the binary form the SDK takes.
func readToken(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--token-file: %w", err)
	}
	if tok, err := identity.ParseHeader(strings.TrimSpace(string(b))); err == nil {
		return tok.Encode(), nil
	}
	if _, err := identity.ParseToken(b); err != nil {
		return nil, fmt.Errorf("--token-file %s: neither a Mesh-Token header value nor a binary token: %w", path, err)
	}
	return b, nil
}

// readCredentials loads the data credentials from a mounted Secret
// directory or a Secret's JSON (kubectl get secret -o json).
func readCredentials(path string) (*identity.DataCredentials, error) {
	data := map[string][]byte{}
	if info, err := os.Stat(path); err == nil && info.IsDir() {
		entries, err := os.ReadDir(path)
		if err != nil {
			return nil, fmt.Errorf("--credentials: %w", err)
		}
		for _, e := range entries {
			// A mounted Secret also holds ..data and timestamped
			// directories; its keys are the other names (symlinks).
			if strings.HasPrefix(e.Name(), ".") || e.IsDir() {
				continue
			}
			b, err := os.ReadFile(filepath.Join(path, e.Name()))
			if err != nil {
				return nil, fmt.Errorf("--credentials: %w", err)
			}
			data[e.Name()] = b
		}
	} else {
		var b []byte
		if path == "-" {
			b, err = io.ReadAll(os.Stdin)
		} else {
			b, err = os.ReadFile(path)
		}
		if err != nil {
			return nil, fmt.Errorf("--credentials: %w", err)
		}
		var secret struct {
			Kind string            `json:"kind"`
			Data map[string][]byte `json:"data"` // base64 in the JSON, as in a Secret
		}
		if err := json.Unmarshal(b, &secret); err != nil || secret.Kind != "Secret" {
			return nil, fmt.Errorf("--credentials %s: not a Secret in JSON (kubectl get secret <cluster>-data-key -o json) nor a directory of its keys (%v)", path, err)
		}
		data = secret.Data
	}
	creds, err := identity.DataCredentialsFromSecretData(data)
	if err != nil {
		return nil, fmt.Errorf("--credentials %s: %w", path, err)
	}
	return creds, nil
}

// payload is the JSON each generated event carries.
type payload struct {
	N   int    `json:"n"`
	Key string `json:"key,omitempty"`
	Pad string `json:"pad,omitempty"`
}

func ingest(ctx context.Context, a ingestArgs, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, a.Timeout)
	defer cancel()
	cl, closeFn, err := connect(ctx, a.common)
	if err != nil {
		return err
	}
	defer closeFn()
	start := time.Now()
	perShard := map[uint16]int{}
	acked := 0
	for first := 0; first < a.Count; first += a.Batch {
		n := min(a.Batch, a.Count-first)
		batch := make([]client.Event, n)
		for i := range batch {
			p := payload{N: first + i}
			if a.Keys > 0 {
				p.Key = a.KeyPrefix + strconv.Itoa((first+i)%a.Keys)
				batch[i].Key = []byte(p.Key)
			}
			b, _ := json.Marshal(p)
			if pad := a.Size - len(b); pad > 0 {
				p.Pad = strings.Repeat("x", max(pad-len(`,"pad":""`), 1))
				b, _ = json.Marshal(p)
			}
			batch[i].Payload = b
		}
		acks, err := cl.Ingest(ctx, batch...)
		if err != nil {
			fmt.Fprintf(out, "acknowledged %d of %d events before an error\n", acked, a.Count)
			return fmt.Errorf("ingest events %d-%d: %w", first, first+n-1, err)
		}
		for _, ack := range acks {
			perShard[ack.Shard]++
		}
		acked += len(acks)
	}
	d := time.Since(start)
	fmt.Fprintf(out, "acknowledged %d of %d events in %s (%.0f events/s, batches of %d)\n",
		acked, a.Count, d.Round(time.Millisecond), float64(acked)/d.Seconds(), a.Batch)
	fmt.Fprintf(out, "per shard: %s\n", shardCounts(perShard))
	return nil
}

func shardCounts(m map[uint16]int) string {
	shards := make([]uint16, 0, len(m))
	for s := range m {
		shards = append(shards, s)
	}
	slices.Sort(shards)
	parts := make([]string, len(shards))
	for i, s := range shards {
		parts[i] = fmt.Sprintf("%d:%d", s, m[s])
	}
	return strings.Join(parts, " ")
}

func poll(ctx context.Context, a pollArgs, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, a.Timeout)
	defer cancel()
	cl, closeFn, err := connect(ctx, a.common)
	if err != nil {
		return err
	}
	defer closeFn()
	start := a.From
	if a.AllFrom {
		c := &consumer.Cursor{}
		for _, s := range cl.Topology().Shards {
			c.Advance(s.ID, adapter.Position{Lo: a.FromSeq})
		}
		if start, err = c.Encode(); err != nil {
			return err
		}
	}
	p, err := cl.NewPoller(start)
	if err != nil {
		return err
	}
	perShard := map[uint16]int{}
	read := 0
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	if !a.Quiet {
		fmt.Fprintln(tw, "SHARD\tSEQ\tTIME\tPAYLOAD")
	}
	for a.Limit == 0 || read < a.Limit {
		size := a.Page
		if a.Limit > 0 {
			size = min(size, a.Limit-read)
		}
		page, err := p.Poll(ctx, size)
		if err != nil {
			_ = tw.Flush()
			return fmt.Errorf("poll after %d events: %w", read, err)
		}
		for _, e := range page.Events {
			if a.Shard >= 0 && int(e.Shard) != a.Shard {
				continue
			}
			read++
			perShard[e.Shard]++
			if !a.Quiet {
				fmt.Fprintf(tw, "%d\t%d\t%s\t%s\n", e.Shard, e.Seq, time.Unix(0, e.Time).UTC().Format(time.RFC3339Nano), e.Payload)
			}
		}
		if len(page.Events) == 0 {
			if !page.HasMore {
				break
			}
			// An owner did not answer (HasMore without events): wait a
			// little for it or for a new topology.
			select {
			case <-ctx.Done():
				_ = tw.Flush()
				return fmt.Errorf("poll after %d events: %w", read, ctx.Err())
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	_ = tw.Flush()
	cursor, err := p.Cursor()
	if err != nil {
		return err
	}
	what := "every shard"
	if a.Shard >= 0 {
		what = "shard " + strconv.Itoa(a.Shard)
	}
	fmt.Fprintf(out, "read %d events from %s\nper shard: %s\ncursor: %s\n", read, what, shardCounts(perShard), cursor)
	return nil
}

func showTopology(ctx context.Context, a topologyArgs, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, a.Timeout)
	defer cancel()
	cl, closeFn, err := connect(ctx, a.common)
	if err != nil {
		return err
	}
	defer closeFn()
	t := cl.Topology()
	if a.JSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(t)
	}
	printTopology(out, t)
	return nil
}

func printTopology(out io.Writer, t *topology.Topology) {
	fmt.Fprintf(out, "cluster %s, epoch %d, %d base shards, lease %s\n\n", t.Cluster, t.Epoch, t.BaseShards, t.Lease())
	owned := map[string][]string{}
	for _, s := range t.Shards {
		owned[s.Owner] = append(owned[s.Owner], strconv.Itoa(int(s.ID)))
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MEMBER\tROLE\tDATA\tWIRE\tOWNS")
	for _, m := range t.Members {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", m.Name, m.Role, m.Data, orDash(m.Wire), orDash(strings.Join(owned[m.Name], ",")))
	}
	fmt.Fprintln(tw)
	// DRAINING: an added shard (id from the base count up) autoscaling
	// retires; it takes no new events and is still read.
	fmt.Fprintln(tw, "SHARD\tOWNER\tFOLLOWERS\tFENCED\tDRAINING")
	for _, s := range t.Shards {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%v\t%v\n", s.ID, s.Owner, orDash(strings.Join(s.Followers, ",")), s.Fenced, s.Draining)
	}
	_ = tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

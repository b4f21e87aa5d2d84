// Command bench-bus measures, in one run on one machine, how many events per
// second reach an acknowledged store through (a) our bus with the RedEX
// adapter, (b) JetStream publish to a file-backed stream, and (c) Redis
// XADD, pipelined, at the same payload sizes, and prints a table with the
// ratios ours/peer.
//
// Acknowledgement level (the same for all three): an event counts once the
// store has accepted it into its own memory or the OS page cache, with no
// per-event fsync. Ours: Bus.Flush has returned, i.e. every event is
// appended to its shard's disk-mode RedEX log (FsyncNever). JetStream: every
// PubAck has arrived from a file-storage stream (the server's default sync
// interval, no per-message fsync). Redis: every XADD reply has arrived
// (appendonly no, no RDB snapshots).
//
// The NATS server is embedded in this process; redis-server runs as a child
// process on a free loopback port (install it with hack/test-deps.sh).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	goredis "github.com/redis/go-redis/v9"

	redexadapter "github.com/purplerain/mesh-operator/engine/adapter/redex"
	"github.com/purplerain/mesh-operator/engine/adapter/redis/redistest"
	"github.com/purplerain/mesh-operator/engine/bus"
	store "github.com/purplerain/mesh-operator/engine/redex"
)

type result struct {
	system string
	size   int
	events int
	dur    time.Duration
}

func (r result) rate() float64 { return float64(r.events) / r.dur.Seconds() }

func main() {
	sizes := flag.String("sizes", "64,1024", "payload sizes in bytes")
	events := flag.Int("events", 1_000_000, "events per run at 64 B (a fifth of that for larger payloads)")
	shards := flag.Int("shards", 1, "bus shards for our run")
	batch := flag.Int("batch", 1000, "events per IngestBatch call for the second 'ours' row")
	pipeline := flag.Int("pipeline", 1000, "Redis pipeline depth and JetStream max pending publishes")
	flag.Parse()

	if err := run(*sizes, *events, *shards, *pipeline, *batch); err != nil {
		fmt.Fprintln(os.Stderr, "bench-bus:", err)
		os.Exit(1)
	}
}

func run(sizeList string, events64, shards, depth, ourBatch int) error {
	dir, err := os.MkdirTemp("", "bench-bus-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true,
		StoreDir: dir + "/nats", NoLog: true, NoSigs: true})
	if err != nil {
		return fmt.Errorf("nats-server: %w", err)
	}
	go ns.Start()
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	if !ns.ReadyForConnections(10 * time.Second) {
		return errors.New("nats-server not ready")
	}
	rs, err := redistest.Start(dir)
	if err != nil {
		return err
	}
	defer rs.Stop()

	var results []result
	for _, f := range strings.Split(sizeList, ",") {
		size, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || size <= 0 {
			return fmt.Errorf("bad size %q", f)
		}
		n := events64
		if size > 64 {
			n = max(events64/5, 10_000)
		}
		payload := make([]byte, size)
		for i := range payload {
			payload[i] = byte(i)
		}
		fmt.Fprintf(os.Stderr, "size %d B, %d events\n", size, n)
		for _, batch := range []int{0, ourBatch} {
			r, err := runOurs(fmt.Sprintf("%s/redex-%d-%d", dir, size, batch), payload, n, shards, batch)
			if err != nil {
				return fmt.Errorf("ours: %w", err)
			}
			results = append(results, r)
		}
		r, err := runJetStream(ns.ClientURL(), payload, n, depth)
		if err != nil {
			return fmt.Errorf("jetstream: %w", err)
		}
		results = append(results, r)
		r, err = runRedis(rs.Addr, payload, n, depth)
		if err != nil {
			return fmt.Errorf("redis: %w", err)
		}
		results = append(results, r)
	}
	print(results)
	return nil
}

// backoff is how long our producer waits when the bus reports
// backpressure (the rings are full because the store is behind). Spinning
// instead would steal the store's CPU on a small machine.
const backoff = 100 * time.Microsecond

// runOurs ingests n events one IngestRaw call at a time (batch == 0) or
// batch events per IngestBatch call, waiting (never dropping) when the
// store falls behind, then flushes.
func runOurs(dir string, payload []byte, n, shards, batch int) (result, error) {
	a := redexadapter.New(redexadapter.Options{Dir: dir, Log: store.Options{Fsync: store.FsyncPolicy{Mode: store.FsyncNever}}})
	defer a.Close()
	b, err := bus.New(a, bus.Config{BaseShards: shards, RingCapacity: 1 << 16, Backpressure: bus.FailProducer(),
		Batch: bus.BatchConfig{Min: 256, Max: 4096, MaxDelay: time.Millisecond}})
	if err != nil {
		return result{}, err
	}
	var evs []bus.Event
	if batch > 0 {
		evs = make([]bus.Event, batch)
		for i := range evs {
			evs[i].Payload = payload
		}
	}
	start := time.Now()
	for i := 0; i < n; {
		if batch == 0 {
			if _, err := b.IngestRaw(payload); err != nil {
				if !errors.Is(err, bus.ErrBackpressure) {
					return result{}, err
				}
				time.Sleep(backoff) // the store is behind: wait for it, never drop
				continue
			}
			i++
			continue
		}
		rc, err := b.IngestBatch(evs[:min(batch, n-i)])
		i += rc.Accepted
		if err != nil {
			if !errors.Is(err, bus.ErrBackpressure) {
				return result{}, err
			}
			time.Sleep(backoff)
		}
	}
	if err := b.Flush(context.Background()); err != nil {
		return result{}, err
	}
	dur := time.Since(start)
	st := b.Stats()
	if err := b.Close(); err != nil {
		return result{}, err
	}
	if st.EventsDispatched != uint64(n) || st.EventsDropped != 0 {
		return result{}, fmt.Errorf("dispatched %d dropped %d of %d", st.EventsDispatched, st.EventsDropped, n)
	}
	name := "ours: IngestRaw -> bus -> RedEX disk"
	if batch > 0 {
		name = fmt.Sprintf("ours: IngestBatch(%d) -> bus -> RedEX disk", batch)
	}
	return result{system: name, size: len(payload), events: n, dur: dur}, nil
}

func runJetStream(url string, payload []byte, n, depth int) (result, error) {
	nc, err := nats.Connect(url)
	if err != nil {
		return result{}, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(depth))
	if err != nil {
		return result{}, err
	}
	ctx := context.Background()
	name := fmt.Sprintf("BENCH_%d", len(payload))
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{"bench." + strconv.Itoa(len(payload))},
		Storage: jetstream.FileStorage}); err != nil {
		return result{}, err
	}
	subj := "bench." + strconv.Itoa(len(payload))
	var failed int
	start := time.Now()
	futs := make([]jetstream.PubAckFuture, 0, depth)
	for i := 0; i < n; i++ {
		f, err := js.PublishAsync(subj, payload)
		if err != nil {
			return result{}, err
		}
		futs = append(futs, f)
		if len(futs) == depth {
			failed += await(futs)
			futs = futs[:0]
		}
	}
	failed += await(futs)
	dur := time.Since(start)
	if failed > 0 {
		return result{}, fmt.Errorf("%d publishes not acknowledged", failed)
	}
	return result{system: "JetStream (file stream, async publish)", size: len(payload), events: n, dur: dur}, nil
}

func await(futs []jetstream.PubAckFuture) int {
	failed := 0
	for _, f := range futs {
		select {
		case <-f.Ok():
		case <-f.Err():
			failed++
		}
	}
	return failed
}

func runRedis(addr string, payload []byte, n, depth int) (result, error) {
	rdb := goredis.NewClient(&goredis.Options{Addr: addr})
	defer rdb.Close()
	ctx := context.Background()
	key := fmt.Sprintf("bench:%d", len(payload))
	start := time.Now()
	for i := 0; i < n; i += depth {
		pipe := rdb.Pipeline()
		for j := i; j < min(i+depth, n); j++ {
			pipe.XAdd(ctx, &goredis.XAddArgs{Stream: key, Values: []any{"e", payload}})
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return result{}, err
		}
	}
	dur := time.Since(start)
	if l, err := rdb.XLen(ctx, key).Result(); err != nil || l != int64(n) {
		return result{}, fmt.Errorf("stream holds %d of %d (%v)", l, n, err)
	}
	return result{system: "Redis (XADD, pipelined)", size: len(payload), events: n, dur: dur}, nil
}

func print(rs []result) {
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "payload\tsystem\tevents\tseconds\tevents/s\tMiB/s\traw/peer\tbatch/peer\t")
	var raw, batch float64
	for _, r := range rs {
		ratios := "-\t-"
		switch {
		case strings.HasPrefix(r.system, "ours: IngestRaw"):
			raw = r.rate()
		case strings.HasPrefix(r.system, "ours"):
			batch = r.rate()
		default:
			ratios = fmt.Sprintf("%.1fx\t%.1fx", raw/r.rate(), batch/r.rate())
		}
		fmt.Fprintf(w, "%d B\t%s\t%d\t%.3f\t%.0f\t%.1f\t%s\t\n", r.size, r.system, r.events, r.dur.Seconds(),
			r.rate(), r.rate()*float64(r.size)/(1<<20), ratios)
	}
	w.Flush()
}

package runtime

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/purplerain/mesh-operator/client"
)

// producers is how many goroutines ingest at once in BenchmarkNodeIngest.
const producers = 8

// rates keeps the last payload throughput (bytes/s) of each configuration,
// so later sub-benchmarks report ratios to earlier ones.
var rates sync.Map

// BenchmarkNodeIngest measures acknowledged ingest into one node through
// the client SDK, over the HTTP data API and over the binary data API on
// the wire port, with ackPolicy Leader and Standby (one follower
// replicating over loopback through the same wire port), 64 B and 1 KiB
// payloads, batches of 1 and 100, 8 concurrent producers sharing one
// client. It reports events/s, payload MB/s, the fraction of this
// machine's loopback TCP throughput (measured first, in the same run) and,
// for the binary transport, the ratio to HTTP in the same configuration.
func BenchmarkNodeIngest(b *testing.B) {
	loop := loopbackRate(b)
	b.Logf("loopback TCP: %.0f MB/s", loop/1e6)
	host := 10
	for _, ack := range []string{"Leader", "Standby"} {
		for _, size := range []int{64, 1024} {
			for _, batch := range []int{1, 100} {
				// Binary is sealed (a wire session per connection, as
				// against the runtime); BinaryPlain is the same without
				// sealing, so the cost of sealing shows side by side.
				// Replication to the follower is sealed in both.
				for _, tr := range []struct {
					name  string
					t     client.Transport
					plain bool
				}{{"HTTP", client.TransportHTTP, false}, {"Binary", client.TransportBinary, false}, {"BinaryPlain", client.TransportBinary, true}} {
					host++
					h := host
					name := fmt.Sprintf("ack=%s/size=%d/batch=%d/%s", ack, size, batch, tr.name)
					b.Run(name, func(b *testing.B) { benchIngest(b, h, ack, size, batch, tr.t, tr.plain, loop) })
				}
			}
		}
	}
}

func benchIngest(b *testing.B, host int, ack string, size, batch int, tr client.Transport, plain bool, loop float64) {
	r := newRig(b, host, ack)
	defer r.stop()
	ctx := context.Background()
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 2 * producers}}
	defer hc.CloseIdleConnections()
	cl, err := client.New(ctx, client.Options{Addresses: []string{r.data}, Transport: tr, HTTPClient: hc, Plaintext: plain})
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	events := make([]client.Event, batch)
	for i := range events {
		events[i] = client.Event{Payload: make([]byte, size)}
	}
	b.SetBytes(int64(size * batch))
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, producers)
	b.ResetTimer()
	for range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				if _, err := cl.Ingest(ctx, events...); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	bps := float64(b.N*size*batch) / b.Elapsed().Seconds()
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(bps/loop, "of-loopback")
	key := fmt.Sprintf("%s/%d/%d", ack, size, batch)
	if tr == client.TransportHTTP {
		rates.Store(key, bps)
	} else if h, ok := rates.Load(key); ok {
		b.ReportMetric(bps/h.(float64), "x-HTTP")
	}
}

var (
	loopOnce sync.Once
	loopBps  float64
)

// loopbackRate measures, once per run, raw 64 KiB writes through one
// loopback TCP connection for one second (bytes/s). (testing.Benchmark
// cannot run inside a benchmark, hence the plain loop.)
func loopbackRate(b *testing.B) float64 {
	loopOnce.Do(func() {
		ln, err := net.Listen("tcp", "127.0.6.1:0")
		if err != nil {
			return
		}
		defer ln.Close()
		got := make(chan int64, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				got <- 0
				return
			}
			defer c.Close()
			n, _ := io.Copy(io.Discard, c)
			got <- n
		}()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return
		}
		buf := make([]byte, 64<<10)
		start := time.Now()
		for time.Since(start) < time.Second {
			if _, err := c.Write(buf); err != nil {
				break
			}
		}
		c.Close()
		n := <-got
		loopBps = float64(n) / time.Since(start).Seconds()
	})
	if loopBps == 0 {
		b.Fatal("loopback measurement failed")
	}
	return loopBps
}

// BenchmarkLoopbackTCP is the limit: raw 64 KiB writes through one
// loopback TCP connection (127.0.6.1), read and discarded on the other
// side.
func BenchmarkLoopbackTCP(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.6.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	got := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- 0
			return
		}
		defer c.Close()
		n, _ := io.Copy(io.Discard, c)
		got <- n
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	c.Close()
	<-got
}

// BenchmarkNodeIngestInProcess is the ceiling without a transport: the
// same producers calling the node's Ingest directly (ackPolicy Leader).
func BenchmarkNodeIngestInProcess(b *testing.B) {
	for _, batch := range []int{1, 100} {
		b.Run(fmt.Sprintf("size=64/batch=%d", batch), func(b *testing.B) {
			r := newRig(b, 60+batch%7, "Leader")
			defer r.stop()
			events := make([]client.Event, batch)
			for i := range events {
				events[i] = client.Event{Payload: make([]byte, 64)}
			}
			b.SetBytes(int64(64 * batch))
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			for range producers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for next.Add(1) <= int64(b.N) {
						if _, err := r.owner.Ingest(context.Background(), events); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

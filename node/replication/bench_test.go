package replication

import (
	"context"
	"io"
	"net"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/purplerain/mesh-operator/engine/redex"
)

// cpuTime is the process's user+system CPU time: on a shared two-core
// machine, wall time also counts waiting for a core.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type benchRig struct {
	ow *owner
	ol *redex.Log
	fl *redex.Log
	f  *Follower
}

func newBenchRig(b *testing.B, plain ...bool) *benchRig {
	return newBenchRigWith(b, "", false, len(plain) > 0 && plain[0])
}

// newBenchRigWith puts the follower's log in dir (disk mode, FsyncNever)
// when dir is set, and makes it fsync before each ack when sync is set.
func newBenchRigWith(b *testing.B, dir string, sync bool, plain ...bool) *benchRig {
	k := newKeys(b)
	src := newSource(1)
	ol := openLog(b, redex.Options{TailBuffer: 8192, Retention: redex.Retention{MaxEvents: 1 << 18}})
	src.add(0, ol)
	ow := startOwner(b, k, src, "", func(o *ServerOptions) { o.HeartbeatInterval = 250 * time.Millisecond })
	fl := openLog(b, redex.Options{Dir: dir, Retention: redex.Retention{MaxEvents: 1 << 18}})
	f := startFollower(b, FollowerOptions{Shard: 0, Addr: ow.addr, Log: fl, Epoch: constEpoch(1), Token: k.token(b, nil), AckInterval: 100 * time.Millisecond, SyncBeforeAck: sync,
		Plaintext: len(plain) > 0 && plain[0]})
	waitFor(b, "connected", func() bool { return f.Status().Connected })
	return &benchRig{ow: ow, ol: ol, fl: fl, f: f}
}

// BenchmarkReplicatedAppend measures owner appends (batches of 64) until
// the follower has appended every one: events/s through the whole path
// (owner log, read/tail, TCP loopback, decode, follower log).
func BenchmarkReplicatedAppend(b *testing.B) {
	// The plain variants skip the wire session (followers seal by
	// default), so the cost of sealing shows side by side.
	for _, size := range []struct {
		name  string
		n     int
		plain bool
	}{{"64B", 64, false}, {"1KiB", 1024, false}, {"64B-plain", 64, true}, {"1KiB-plain", 1024, true}} {
		b.Run(size.name, func(b *testing.B) {
			r := newBenchRig(b, size.plain)
			const batch = 64
			ps := make([][]byte, batch)
			for i := range ps {
				ps[i] = make([]byte, size.n)
			}
			b.SetBytes(int64(size.n))
			start := r.ol.NextSeq()
			cpu := cpuTime()
			b.ResetTimer()
			for i := 0; i < b.N; i += batch {
				n := min(batch, b.N-i)
				if _, _, err := r.ol.AppendBatch(ps[:n]); err != nil {
					b.Fatal(err)
				}
				if i%(1<<14) == 0 {
					// Keep the follower within half the retention window
					// (the owner would rightly report it lagged), then
					// sweep so memory stays bounded.
					for r.ol.NextSeq()-r.fl.NextSeq() > 1<<17 {
						time.Sleep(50 * time.Microsecond)
					}
					r.ol.Sweep(time.Now())
					r.fl.Sweep(time.Now())
				}
			}
			want := start + uint64(b.N)
			for r.fl.NextSeq() < want {
				if err := r.f.Err(); err != nil {
					b.Fatal(err)
				}
				time.Sleep(50 * time.Microsecond)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
		})
	}
}

// BenchmarkWaitReplicatedLatency is one event's round trip under
// ackPolicy Standby: owner append → streamed → follower append → ack →
// WaitReplicated returns.
func BenchmarkWaitReplicatedLatency(b *testing.B) {
	b.Run("memory", func(b *testing.B) { benchWaitReplicated(b, newBenchRig(b)) })
	b.Run("disk-sync-before-ack", func(b *testing.B) { benchWaitReplicated(b, newBenchRigWith(b, b.TempDir(), true)) })
}

func benchWaitReplicated(b *testing.B, r *benchRig) {
	p := make([]byte, 64)
	ctx := context.Background()
	lat := make([]time.Duration, 0, b.N)
	cpu := cpuTime()
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		seq, err := r.ol.Append(p)
		if err != nil {
			b.Fatal(err)
		}
		if err := r.ow.srv.WaitReplicated(ctx, 0, seq); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
	b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
}

// BenchmarkLoopbackTCP is the limit: raw 64 KiB writes through one
// loopback TCP connection, read on the other side.
func BenchmarkLoopbackTCP(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
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

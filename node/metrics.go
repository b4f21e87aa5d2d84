package node

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Collector exposes the node's state to Prometheus. It reads the state at
// scrape time, so the ingest path pays nothing for metrics.
type Collector struct{ n *Node }

// NewCollector returns the node's metrics collector.
func (n *Node) NewCollector() *Collector { return &Collector{n: n} }

var (
	descEpoch      = prometheus.NewDesc("mesh_node_epoch", "Topology epoch the node holds.", nil, nil)
	descLease      = prometheus.NewDesc("mesh_node_lease_remaining_seconds", "How long the node may still accept writes without a topology push.", nil, nil)
	descRole       = prometheus.NewDesc("mesh_node_role", "1 for the node's role in the topology.", []string{"role"}, nil)
	descNext       = prometheus.NewDesc("mesh_shard_next_seq", "Next sequence number of a local shard log.", []string{"shard", "role"}, nil)
	descLag        = prometheus.NewDesc("mesh_shard_replication_lag_events", "Events a followed shard is behind its owner.", []string{"shard"}, nil)
	descIngested   = prometheus.NewDesc("mesh_bus_events_ingested_total", "Events accepted by the node bus.", nil, nil)
	descDispatched = prometheus.NewDesc("mesh_bus_events_dispatched_total", "Events appended to shard logs by the node bus.", nil, nil)
	descDropped    = prometheus.NewDesc("mesh_bus_events_dropped_total", "Events the node bus could not append.", nil, nil)
	descFailures   = prometheus.NewDesc("mesh_bus_dispatch_failures_total", "Batches the node bus gave up on.", nil, nil)
)

// descRuleRefused counts, per behaviour rule, the ingest requests it
// refused (read from the rule engine at scrape time).
var descRuleRefused = prometheus.NewDesc("mesh_rule_refused_requests_total",
	"Ingest requests a behaviour rule refused, by rule and reason (rejected or rate_limited).", []string{"rule", "reason"}, nil)

// descRulesActive is how many rules the node enforces; its hash label is
// the set's hash (admin status rules.hash), so nodes enforcing different
// rules (a push still under way) show up as different series.
var descRulesActive = prometheus.NewDesc("mesh_rules_active",
	"Behaviour rules the node enforces, labelled with the rule set's hash.", []string{"hash"}, nil)

// descDaemonNext is each hosted daemon's next seq (compare with
// mesh_shard_next_seq for its lag); descDaemonRunning says its feed runs.
var (
	descDaemonNext    = prometheus.NewDesc("mesh_daemon_next_seq", "Next shard sequence number a hosted daemon expects.", []string{"daemon", "shard", "role"}, nil)
	descDaemonRunning = prometheus.NewDesc("mesh_daemon_running", "1 while a hosted daemon's feed runs, 0 after it halted.", []string{"daemon", "shard", "role"}, nil)
)

// Autoscaling signals of each owned shard (ShardLoad, over the last
// second).
var (
	descFillRatio   = prometheus.NewDesc("mesh_shard_fill_ratio", "Mean ring occupancy of an owned shard over the last second, as a fraction of the ring.", []string{"shard"}, nil)
	descEventRate   = prometheus.NewDesc("mesh_shard_event_rate", "Events per second appended to an owned shard over the last second.", []string{"shard"}, nil)
	descPushLatency = prometheus.NewDesc("mesh_shard_push_latency_seconds", "Mean time an event waited in an owned shard's ring over the last second (Little's law).", []string{"shard"}, nil)
)

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descEpoch, descLease, descRole, descNext, descLag, descIngested, descDispatched, descDropped, descFailures, descRuleRefused, descRulesActive, descDaemonNext, descDaemonRunning, descFillRatio, descEventRate, descPushLatency} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	n := c.n
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	gauge(descEpoch, float64(n.epoch()))
	gauge(descLease, max(n.LeaseRemaining().Seconds(), 0))
	if role := n.Role(); role != "" {
		gauge(descRole, 1, string(role))
	}
	for _, s := range n.ShardStatuses() {
		id := strconv.Itoa(int(s.ID))
		gauge(descNext, float64(s.Next), id, s.Role)
		if s.Role == "follower" {
			gauge(descLag, float64(s.Lag), id)
		}
		if l := s.Load; l != nil {
			gauge(descFillRatio, l.FillRatio, id)
			gauge(descEventRate, l.EventRate, id)
			gauge(descPushLatency, float64(l.PushLatencyMicros)/1e6, id)
		}
	}
	for _, d := range n.DaemonStatuses(false) {
		id := strconv.Itoa(int(d.Shard))
		gauge(descDaemonNext, float64(d.Next), d.Name, id, d.Role)
		running := 0.0
		if d.Running {
			running = 1
		}
		gauge(descDaemonRunning, running, d.Name, id, d.Role)
	}
	st := n.bus.Stats()
	counter(descIngested, st.EventsIngested)
	counter(descDispatched, st.EventsDispatched)
	counter(descDropped, st.EventsDropped)
	counter(descFailures, st.DispatchFailures)
	set := n.Rules()
	gauge(descRulesActive, float64(set.Len()), set.Hash())
	for _, r := range n.rules.Stats() {
		ch <- prometheus.MustNewConstMetric(descRuleRefused, prometheus.CounterValue, float64(r.Rejected), r.Name, "rejected")
		ch <- prometheus.MustNewConstMetric(descRuleRefused, prometheus.CounterValue, float64(r.RateLimited), r.Name, "rate_limited")
	}
}

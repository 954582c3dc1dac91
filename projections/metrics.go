package projections

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/domain/connection"
)

// Metrics is a projection that turns domain events into Prometheus metrics: clears and their
// duration (request → QueueCleared), purged messages, and bans. It keeps no rows, only its
// checkpoint, so a restart does not count history twice. It also registers a collector that
// reads each connection's queue depth from the card read model at scrape time.
type Metrics struct {
	clears   *prometheus.CounterVec
	duration prometheus.Histogram
	purged   prometheus.Counter
	bans     *prometheus.CounterVec
}

// NewMetrics registers the metrics on reg and returns the projection.
func NewMetrics(reg prometheus.Registerer, db *DB) (*Metrics, error) {
	m := &Metrics{
		clears: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "waqueue_clears_total", Help: "Clears completed (QueueCleared), by scope (queue or broadcast).",
		}, []string{"scope"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "waqueue_clear_duration_seconds",
			Help:    "Time from ClearQueueRequested to QueueCleared, as recorded in the events.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}),
		purged: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "waqueue_purged_messages_total", Help: "Messages purged by completed clears.",
		}),
		bans: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "waqueue_bans_total", Help: "Connections banned (ConnectionBanned), by kind.",
		}, []string{"kind"}),
	}
	for _, c := range []prometheus.Collector{m.clears, m.duration, m.purged, m.bans, &depthCollector{db: db}} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("projections: register metrics: %w", err)
		}
	}
	return m, nil
}

// Name implements Projection.
func (*Metrics) Name() string { return "metrics" }

// Filter implements Projection.
func (*Metrics) Filter() eventstore.Filter {
	return eventstore.Filter{StreamPrefixes: []string{connection.StreamPrefix},
		EventTypes: []string{connection.TypeQueueCleared, connection.TypeConnectionBanned}}
}

// Apply implements Projection; the metrics are observed after the commit.
func (*Metrics) Apply(context.Context, *Tx, []eventstore.RecordedEvent) error { return nil }

// Reset implements Projection.
func (*Metrics) Reset(context.Context, *Tx) error { return nil }

// AfterCommit observes the batch.
func (m *Metrics) AfterCommit(events []eventstore.RecordedEvent) {
	for _, e := range events {
		ev, err := connection.Decode(e.Type, e.Data)
		if err != nil {
			continue
		}
		switch ev := ev.(type) {
		case connection.QueueCleared:
			scope := "queue"
			if ev.Scope != connection.WholeQueue {
				scope = "broadcast"
			}
			m.clears.WithLabelValues(scope).Inc()
			m.purged.Add(float64(ev.PurgedCount))
			if d := ev.CompletedAt.Sub(ev.RequestedAt); d >= 0 {
				m.duration.Observe(d.Seconds())
			}
		case connection.ConnectionBanned:
			m.bans.WithLabelValues(ev.Kind.String()).Inc()
		}
	}
}

// depthCollector reports each connection's pending and in-flight counts from the card read
// model when scraped.
type depthCollector struct{ db *DB }

var (
	depthDesc    = prometheus.NewDesc("waqueue_queue_depth", "Pending messages of a connection's queue.", []string{"tenant", "connection"}, nil)
	inFlightDesc = prometheus.NewDesc("waqueue_queue_in_flight", "Messages handed to WhatsApp and not yet acknowledged.", []string{"tenant", "connection"}, nil)
)

func (c *depthCollector) Describe(ch chan<- *prometheus.Desc) { ch <- depthDesc; ch <- inFlightDesc }

func (c *depthCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rows, err := c.db.QueryContext(ctx, `SELECT tenant_id, conn_id, pending, in_flight FROM card_connections`)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(depthDesc, err)
		return
	}
	defer rows.Close()
	for rows.Next() {
		var tenant, conn string
		var pending, inFlight int64
		if err := rows.Scan(&tenant, &conn, &pending, &inFlight); err != nil {
			ch <- prometheus.NewInvalidMetric(depthDesc, err)
			return
		}
		ch <- prometheus.MustNewConstMetric(depthDesc, prometheus.GaugeValue, float64(pending), tenant, conn)
		ch <- prometheus.MustNewConstMetric(inFlightDesc, prometheus.GaugeValue, float64(inFlight), tenant, conn)
	}
	if err := rows.Err(); err != nil {
		ch <- prometheus.NewInvalidMetric(depthDesc, err)
	}
}

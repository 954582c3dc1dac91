package projections

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/domain/connection"
)

// Metrics is a projection that turns domain events into Prometheus metrics: clears and their
// duration (request → QueueCleared), purged messages, and bans. It keeps no rows, only its
// checkpoint, so a restart does not count history twice. It also registers a collector that
// reads the queue depths from the card read model at scrape time.
//
// Label cardinality is bounded: no series carries a connection id; by default none carries a
// tenant id either (the depths are node totals, connections are counted by link status). With
// MetricsOptions.TenantTop > 0 the depths are also broken down by tenant for the TenantTop
// tenants with the most pending messages, the others summed under tenant OtherTenants.
type Metrics struct {
	clears   *prometheus.CounterVec
	duration prometheus.Histogram
	purged   prometheus.Counter
	bans     *prometheus.CounterVec
}

// MaxTenantTop bounds MetricsOptions.TenantTop.
const MaxTenantTop = 100

// OtherTenants is the tenant label of the depths of the tenants outside the top.
const OtherTenants = "(other)"

// MetricsOptions configure the metrics of NewMetrics.
type MetricsOptions struct {
	// TenantTop, if positive, adds waqueue_tenant_queue_depth{tenant} and
	// waqueue_tenant_queue_in_flight{tenant} for the TenantTop tenants with the most pending
	// messages (ties by tenant id), the rest summed under OtherTenants: at most TenantTop+1
	// series each. Zero (the default): no tenant label. At most MaxTenantTop.
	TenantTop int
}

// NewMetrics registers the metrics on reg and returns the projection.
func NewMetrics(reg prometheus.Registerer, db *DB, opts MetricsOptions) (*Metrics, error) {
	if opts.TenantTop < 0 || opts.TenantTop > MaxTenantTop {
		return nil, fmt.Errorf("projections: MetricsOptions.TenantTop %d: want 0 to %d", opts.TenantTop, MaxTenantTop)
	}
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
	for _, c := range []prometheus.Collector{m.clears, m.duration, m.purged, m.bans, &depthCollector{db: db, top: opts.TenantTop}} {
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

// depthCollector reports the node's pending and in-flight totals, the connections by link
// status, and optionally the depths of the top tenants, from the card read model when scraped.
type depthCollector struct {
	db  *DB
	top int
}

var (
	depthDesc       = prometheus.NewDesc("waqueue_queue_depth", "Pending messages of every queue of the node.", nil, nil)
	inFlightDesc    = prometheus.NewDesc("waqueue_queue_in_flight", "Messages handed to WhatsApp and not yet acknowledged, node total.", nil, nil)
	connectionsDesc = prometheus.NewDesc("waqueue_connections", "Registered connections by link status.", []string{"link_status"}, nil)
	tenantDepthDesc = prometheus.NewDesc("waqueue_tenant_queue_depth",
		"Pending messages of the top tenants (opt-in, --metrics-tenant-top); the others under tenant=\"(other)\".", []string{"tenant"}, nil)
	tenantInFlightDesc = prometheus.NewDesc("waqueue_tenant_queue_in_flight",
		"In-flight messages of the top tenants (opt-in, --metrics-tenant-top); the others under tenant=\"(other)\".", []string{"tenant"}, nil)
)

func (c *depthCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- depthDesc
	ch <- inFlightDesc
	ch <- connectionsDesc
	if c.top > 0 {
		ch <- tenantDepthDesc
		ch <- tenantInFlightDesc
	}
}

type tenantDepth struct {
	tenant            string
	pending, inFlight int64
}

func (c *depthCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rows, err := c.db.QueryContext(ctx, `SELECT tenant_id, link_status, COUNT(*), SUM(pending), SUM(in_flight) FROM card_connections GROUP BY tenant_id, link_status`)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(depthDesc, err)
		return
	}
	defer rows.Close()
	var pending, inFlight int64
	byStatus := map[string]int64{}
	byTenant := map[string]*tenantDepth{}
	for rows.Next() {
		var tenant, status string
		var n, p, f int64
		if err := rows.Scan(&tenant, &status, &n, &p, &f); err != nil {
			ch <- prometheus.NewInvalidMetric(depthDesc, err)
			return
		}
		pending, inFlight = pending+p, inFlight+f
		byStatus[status] += n
		td := byTenant[tenant]
		if td == nil {
			td = &tenantDepth{tenant: tenant}
			byTenant[tenant] = td
		}
		td.pending, td.inFlight = td.pending+p, td.inFlight+f
	}
	if err := rows.Err(); err != nil {
		ch <- prometheus.NewInvalidMetric(depthDesc, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(depthDesc, prometheus.GaugeValue, float64(pending))
	ch <- prometheus.MustNewConstMetric(inFlightDesc, prometheus.GaugeValue, float64(inFlight))
	for _, st := range []connection.LinkStatus{connection.LinkStatusUnpaired, connection.LinkStatusActive,
		connection.LinkStatusSessionInvalid, connection.LinkStatusBanned} {
		ch <- prometheus.MustNewConstMetric(connectionsDesc, prometheus.GaugeValue, float64(byStatus[st.String()]), st.String())
	}
	if c.top <= 0 {
		return
	}
	tenants := make([]*tenantDepth, 0, len(byTenant))
	for _, td := range byTenant {
		tenants = append(tenants, td)
	}
	slices.SortFunc(tenants, func(a, b *tenantDepth) int {
		if a.pending != b.pending {
			return cmp.Compare(b.pending, a.pending)
		}
		return cmp.Compare(a.tenant, b.tenant)
	})
	other := tenantDepth{tenant: OtherTenants}
	for i, td := range tenants {
		if i >= c.top {
			other.pending, other.inFlight = other.pending+td.pending, other.inFlight+td.inFlight
			continue
		}
		ch <- prometheus.MustNewConstMetric(tenantDepthDesc, prometheus.GaugeValue, float64(td.pending), td.tenant)
		ch <- prometheus.MustNewConstMetric(tenantInFlightDesc, prometheus.GaugeValue, float64(td.inFlight), td.tenant)
	}
	if len(tenants) > c.top {
		ch <- prometheus.MustNewConstMetric(tenantDepthDesc, prometheus.GaugeValue, float64(other.pending), other.tenant)
		ch <- prometheus.MustNewConstMetric(tenantInFlightDesc, prometheus.GaugeValue, float64(other.inFlight), other.tenant)
	}
}

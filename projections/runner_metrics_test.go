package projections_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/internal/testwait"
	"github.com/waqueue/waqueue/projections"
	"github.com/waqueue/waqueue/projections/clearkit"
)

// failFirst is a projection of connection events that fails its first n batches.
type failFirst struct {
	mu sync.Mutex
	n  int
}

func (*failFirst) Name() string { return "fail_first" }
func (*failFirst) Filter() eventstore.Filter {
	return eventstore.Filter{StreamPrefixes: []string{connection.StreamPrefix}}
}
func (*failFirst) Reset(context.Context, *projections.Tx) error { return nil }
func (f *failFirst) Apply(context.Context, *projections.Tx, []eventstore.RecordedEvent) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n > 0 {
		f.n--
		return errors.New("injected failure")
	}
	return nil
}

// gauge returns the value of the series name{projection=proj} gathered from reg, and whether
// it exists.
func seriesValue(t *testing.T, reg *prometheus.Registry, name, proj string) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if labelIs(m, "projection", proj) {
				if m.GetCounter() != nil {
					return m.GetCounter().GetValue(), true
				}
				return m.GetGauge().GetValue(), true
			}
		}
	}
	return 0, false
}

func labelIs(m *dto.Metric, key, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == key && l.GetValue() == value {
			return true
		}
	}
	return false
}

// TestRunnerMetrics: the per-projection series exist before any event, the lag gauges count the
// events past the checkpoint and their age, and after the runner caught up (waited for by
// position) applied, failures and redeliveries have moved and the lag is zero.
func TestRunnerMetrics(t *testing.T) {
	eachEngine(t, func(t *testing.T, e *env) {
		ctx, cancel := context.WithTimeout(context.Background(), testwait.AtLeast(2*time.Minute))
		defer cancel()
		const n = 5
		var last eventstore.Position
		for i := range n {
			typ, data, err := connection.Encode(connection.MessageQueued{MessageID: uuid.New(), Seq: uint64(i + 1), Recipient: "+491701111111", QueuedAt: storeClock()})
			if err != nil {
				t.Fatal(err)
			}
			res, err := e.store.Append(ctx, connection.StreamName("rm-"+uuid.NewString()[:8]), eventstore.Any,
				eventstore.EventData{ID: uuid.New(), Type: typ, Data: data, Metadata: eventstore.Metadata{TenantID: "t1"}})
			if err != nil {
				t.Fatal(err)
			}
			last = res.Position
		}
		reg := prometheus.NewRegistry()
		p := &failFirst{n: 2}
		r, err := projections.NewRunner(projections.RunnerConfig{DB: e.db, Store: e.store, Projections: []projections.Projection{p},
			Logger: silentLogger, BatchSize: 64, Registerer: reg, Now: func() time.Time { return storeClock().Add(time.Hour) }})
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"waqueue_projection_events_applied_total", "waqueue_projection_failures_total", "waqueue_projection_redeliveries_total"} {
			if v, ok := seriesValue(t, reg, name, p.Name()); !ok || v != 0 {
				t.Fatalf("%s before the start: %v (exists %v), want 0", name, v, ok)
			}
		}
		if v, _ := seriesValue(t, reg, "waqueue_projection_lag_events", p.Name()); v != n {
			t.Fatalf("lag_events before the start = %v, want %d", v, n)
		}
		if v, _ := seriesValue(t, reg, "waqueue_projection_lag_seconds", p.Name()); v != 3600 {
			t.Fatalf("lag_seconds before the start = %v, want 3600 (the oldest event is an hour old)", v)
		}

		rctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- r.Run(rctx) }()
		defer func() { stop(); <-done }()
		if err := r.WaitFor(ctx, []string{p.Name()}, last); err != nil {
			t.Fatal(err)
		}
		for name, want := range map[string]float64{
			"waqueue_projection_events_applied_total": n,
			"waqueue_projection_failures_total":       2,
			"waqueue_projection_lag_events":           0,
			"waqueue_projection_lag_seconds":          0,
		} {
			if v, ok := seriesValue(t, reg, name, p.Name()); !ok || v != want {
				t.Errorf("%s = %v (exists %v), want %v", name, v, ok, want)
			}
		}
		if v, _ := seriesValue(t, reg, "waqueue_projection_redeliveries_total", p.Name()); v < 2 {
			t.Errorf("redeliveries_total = %v, want at least 2 (each failed batch is delivered again)", v)
		}
		if _, err := projections.NewRunner(projections.RunnerConfig{DB: e.db, Store: e.store, Projections: []projections.Projection{p},
			Registerer: reg}); err == nil {
			t.Error("a second runner registered on the same registry")
		}
	})
}

// TestDepthMetricsCardinality: by default the queue depths carry no tenant or connection
// label; with TenantTop the top tenants by pending get a series each and the rest one
// "(other)" series, never a connection id.
func TestDepthMetricsCardinality(t *testing.T) {
	eachEngine(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		cards := projections.NewCards()
		r := startRunner(t, e, cards)
		seeds := []struct {
			tenant, conn string
			pending      int
		}{{"tenant-a", "dm-a1", 3}, {"tenant-a", "dm-a2", 2}, {"tenant-b", "dm-b1", 4}, {"tenant-c", "dm-c1", 1}}
		for i, s := range seeds {
			st, err := clearkit.Register(ctx, e.store, s.tenant, s.conn, fmt.Sprintf("+4917012345%02d", i), at(0))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := clearkit.SeedPending(ctx, st, s.pending, at(1)); err != nil {
				t.Fatal(err)
			}
		}
		r.waitFor(t, e, cards)

		plain := prometheus.NewRegistry()
		if _, err := projections.NewMetrics(plain, e.db, projections.MetricsOptions{}); err != nil {
			t.Fatal(err)
		}
		text := gatherText(t, plain)
		for _, want := range []string{"waqueue_queue_depth 10", "waqueue_queue_in_flight 0", `waqueue_connections{link_status="unpaired"} 4`} {
			if !strings.Contains(text, want) {
				t.Errorf("metrics lack %q:\n%s", want, text)
			}
		}
		for _, leak := range []string{"tenant", "dm-", "connection="} {
			if strings.Contains(text, leak) {
				t.Errorf("default metrics carry %q:\n%s", leak, text)
			}
		}

		top := prometheus.NewRegistry()
		if _, err := projections.NewMetrics(top, e.db, projections.MetricsOptions{TenantTop: 1}); err != nil {
			t.Fatal(err)
		}
		text = gatherText(t, top)
		for _, want := range []string{`waqueue_tenant_queue_depth{tenant="tenant-a"} 5`, `waqueue_tenant_queue_depth{tenant="(other)"} 5`} {
			if !strings.Contains(text, want) {
				t.Errorf("top-1 metrics lack %q:\n%s", want, text)
			}
		}
		if strings.Contains(text, `tenant="tenant-b"`) || strings.Contains(text, "dm-") {
			t.Errorf("top-1 metrics exceed the bound:\n%s", text)
		}
		if _, err := projections.NewMetrics(prometheus.NewRegistry(), e.db, projections.MetricsOptions{TenantTop: projections.MaxTenantTop + 1}); err == nil {
			t.Error("TenantTop above the maximum accepted")
		}
	})
}

// gatherText renders reg's waqueue_ series as "name{labels} value" lines.
func gatherText(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			name := mf.GetName()
			if len(labels) > 0 {
				name += "{" + strings.Join(labels, ",") + "}"
			}
			fmt.Fprintf(&b, "%s %v\n", name, m.GetGauge().GetValue())
		}
	}
	return b.String()
}

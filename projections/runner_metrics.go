package projections

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/waqueue/waqueue/adapters/eventstore"
)

// DefaultLagScanLimit is how many events past a projection's checkpoint the lag gauge counts
// at most (RunnerConfig.LagScanLimit).
const DefaultLagScanLimit = 1000

// runnerMetrics are the per-projection metrics of a Runner. The only label is the projection's
// name, a fixed set.
type runnerMetrics struct {
	applied      *prometheus.CounterVec
	failures     *prometheus.CounterVec
	redeliveries *prometheus.CounterVec
}

var (
	lagEventsDesc = prometheus.NewDesc("waqueue_projection_lag_events",
		"Events the projection's filter selects past its checkpoint, counted up to the runner's scan limit (default 1000): a value at the limit means at least that many.",
		[]string{"projection"}, nil)
	lagSecondsDesc = prometheus.NewDesc("waqueue_projection_lag_seconds",
		"Age of the oldest event past the projection's checkpoint (0 when caught up).",
		[]string{"projection"}, nil)
)

func newRunnerMetrics() *runnerMetrics {
	return &runnerMetrics{
		applied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "waqueue", Subsystem: "projection", Name: "events_applied_total",
			Help: "Events applied (committed with the checkpoint), by projection.",
		}, []string{"projection"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "waqueue", Subsystem: "projection", Name: "failures_total",
			Help: "Batches that failed (rolled back; delivered again), by projection.",
		}, []string{"projection"}),
		redeliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "waqueue", Subsystem: "projection", Name: "redeliveries_total",
			Help: "Batches delivered again (after a failure, or overlapping events already delivered), by projection.",
		}, []string{"projection"}),
	}
}

// register registers the counters and the lag collector on reg and starts every projection's
// series at zero, so that they exist before the first event.
func (m *runnerMetrics) register(reg prometheus.Registerer, r *Runner) error {
	for _, c := range []prometheus.Collector{m.applied, m.failures, m.redeliveries, lagCollector{r: r}} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return errors.New("projections: runner metrics already registered (one Runner per registerer)")
			}
			return fmt.Errorf("projections: register runner metrics: %w", err)
		}
	}
	for _, p := range r.cfg.Projections {
		m.applied.WithLabelValues(p.Name())
		m.failures.WithLabelValues(p.Name())
		m.redeliveries.WithLabelValues(p.Name())
	}
	return nil
}

// lagCollector measures each projection's lag at scrape time: it reads, from the event store,
// the events past the projection's checkpoint that its filter selects (at most LagScanLimit).
type lagCollector struct{ r *Runner }

func (c lagCollector) Describe(ch chan<- *prometheus.Desc) { ch <- lagEventsDesc; ch <- lagSecondsDesc }

func (c lagCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	now := c.r.cfg.Now()
	var wg sync.WaitGroup
	for _, p := range c.r.cfg.Projections {
		c.r.mu.Lock()
		cp := c.r.stat[p.Name()].Checkpoint
		c.r.mu.Unlock()
		wg.Add(1)
		go func() { // one read per projection, concurrently: a read may wait for the store's horizon
			defer wg.Done()
			events, err := c.r.cfg.Store.ReadAll(ctx, cp, c.r.cfg.LagScanLimit, p.Filter())
			if err != nil {
				// A scrape must not fail because the store is down; readiness reports that.
				c.r.cfg.Logger.Debug("projections: lag not measured", "projection", p.Name(), "err", err)
				return
			}
			lag := 0.0
			if len(events) > 0 {
				lag = max(now.Sub(events[0].RecordedAt).Seconds(), 0)
			}
			ch <- prometheus.MustNewConstMetric(lagEventsDesc, prometheus.GaugeValue, float64(len(events)), p.Name())
			ch <- prometheus.MustNewConstMetric(lagSecondsDesc, prometheus.GaugeValue, lag, p.Name())
		}()
	}
	wg.Wait()
}

// observeBatch counts a delivered batch: a redelivery when it starts at or before the end of
// the batch delivered last.
func (r *Runner) observeBatch(name string, events []eventstore.RecordedEvent) {
	if len(events) == 0 {
		return
	}
	r.mu.Lock()
	last, seen := r.lastDelivered[name]
	r.lastDelivered[name] = events[len(events)-1].Position
	r.mu.Unlock()
	if seen && !last.Less(events[0].Position) {
		r.metrics.redeliveries.WithLabelValues(name).Inc()
	}
}

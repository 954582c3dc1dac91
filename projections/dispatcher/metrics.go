package dispatcher

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Outcome labels of waqueue_dispatcher_sends_total.
const (
	OutcomeSent         = "sent"          // the server acknowledged the message
	OutcomeFailed       = "failed"        // ErrRejected: refused for good, nothing sent
	OutcomeUnknown      = "unknown"       // ErrOutcomeUnknown, timeout or shutdown mid-send
	OutcomeRateLimited  = "rate_limited"  // refused before sending; retried
	OutcomeNotConnected = "not_connected" // refused before sending; retried
	OutcomeNotSent      = "not_sent"      // retries given up (link lost, queue held, attempts spent)
	OutcomeExpired      = "expired"       // TTL passed: recorded expired, never sent
	OutcomeRecovered    = "recovered"     // found in flight at start: recorded unknown
)

// metrics are the Dispatcher's Prometheus collectors.
type metrics struct {
	latency     prometheus.Histogram
	sends       *prometheus.CounterVec
	bans        *prometheus.CounterVec
	activeLoops prometheus.Gauge
	events      *prometheus.CounterVec
	refused     *prometheus.CounterVec
	leasesHeld  prometheus.Gauge
	leaseLost   prometheus.Counter
	paceDelay   prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "waqueue", Subsystem: "dispatcher", Name: "send_latency_seconds",
			Help:    "Duration of transport Send calls that handed the message over (answered sent or outcome unknown), measured in real time.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 15),
		}),
		sends: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "waqueue", Subsystem: "dispatcher", Name: "sends_total",
			Help: "Dispatch attempts by outcome (sent, failed, unknown, rate_limited, not_connected, not_sent, expired, recovered).",
		}, []string{"outcome"}),
		bans: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "waqueue", Subsystem: "dispatcher", Name: "bans_total",
			Help: "Bans reported by the transport, by kind (temporary, permanent).",
		}, []string{"kind"}),
		activeLoops: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "waqueue", Subsystem: "dispatcher", Name: "active_loops",
			Help: "Connections with a running dispatch loop.",
		}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "waqueue", Subsystem: "dispatcher", Name: "transport_events_total",
			Help: "Transport events handled, by event type and result (recorded, refused, ignored, error).",
		}, []string{"type", "result"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "waqueue", Subsystem: "dispatcher", Name: "receipts_refused_total",
			Help: "Delivered/read receipts the domain refused for a message it never handed over (purged, expired, failed, never dispatched), by kind.",
		}, []string{"kind"}),
		leasesHeld: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "waqueue", Subsystem: "dispatcher", Name: "leases_held",
			Help: "Connection leases this node holds (connections it dispatches and whose sessions it runs).",
		}),
		leaseLost: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "waqueue", Subsystem: "dispatcher", Name: "leases_lost_total",
			Help: "Connection leases lost without a release: not renewed in time, or a stale epoch refused by the domain.",
		}),
		paceDelay: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "waqueue", Subsystem: "dispatcher", Name: "pacing_delay_seconds",
			Help:    "How long after its pacing interval allowed it a paced dispatch was recorded (the interval between two messages of a connection is the policy's plus this).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.latency, m.sends, m.bans, m.activeLoops, m.events, m.refused, m.leasesHeld, m.leaseLost, m.paceDelay} {
			if err := reg.Register(c); err != nil {
				var are prometheus.AlreadyRegisteredError
				if errors.As(err, &are) {
					return nil, errors.New("dispatcher: metrics already registered (one Dispatcher per registerer)")
				}
				return nil, err
			}
		}
	}
	return m, nil
}

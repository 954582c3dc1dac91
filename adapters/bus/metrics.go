package bus

import (
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
)

// RouterMetrics are Prometheus metrics of watermill routers' handlers: messages handled by
// handler and result, and handling time. Handler names are the projections' and the
// commands' names, a fixed set, so the series are bounded. One RouterMetrics serves every
// router of a node (Instrument each).
type RouterMetrics struct {
	handled  *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// NewRouterMetrics registers the metrics on reg:
// waqueue_router_messages_total{handler,result} (result ok or error: an error nacks the
// message, which is delivered again) and waqueue_router_handler_duration_seconds{handler}.
func NewRouterMetrics(reg prometheus.Registerer) (*RouterMetrics, error) {
	m := &RouterMetrics{
		handled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "waqueue", Subsystem: "router", Name: "messages_total",
			Help: "Messages handled by watermill router handlers (projections, command processor), by handler and result (ok, error: nacked and delivered again).",
		}, []string{"handler", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "waqueue", Subsystem: "router", Name: "handler_duration_seconds",
			Help:    "Time watermill router handlers took per message, by handler.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"handler"}),
	}
	for _, c := range []prometheus.Collector{m.handled, m.duration} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("bus: register router metrics: %w", err)
		}
	}
	return m, nil
}

// Instrument adds the metrics middleware to r; call it before r runs.
func (m *RouterMetrics) Instrument(r *message.Router) {
	r.AddMiddleware(func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			name := message.HandlerNameFromCtx(msg.Context())
			start := time.Now()
			out, err := h(msg)
			m.duration.WithLabelValues(name).Observe(time.Since(start).Seconds())
			result := "ok"
			if err != nil {
				result = "error"
			}
			m.handled.WithLabelValues(name, result).Inc()
			return out, err
		}
	})
}

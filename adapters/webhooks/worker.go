package webhooks

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/waqueue/waqueue/projections"
)

// WorkerConfig configures a Worker.
type WorkerConfig struct {
	// DB is the read-model database holding the outbox. Required.
	DB *projections.DB
	// Egress is the policy every connection is checked against (the Service's). Default:
	// public addresses only. The worker's HTTP client is Egress.Client(Timeout): no proxy, no
	// redirects followed.
	Egress *Egress
	// Registerer receives the delivery metrics (waqueue_webhook_*). Optional.
	Registerer prometheus.Registerer
	// Now is the clock deciding what is due and stamping the log. Default: the wall clock, UTC.
	Now func() time.Time
	// Timeout bounds one request. Default 10s.
	Timeout time.Duration
	// Backoff is the delay after the first failed attempt; it doubles per attempt up to
	// MaxBackoff. Defaults 5s and 1h.
	Backoff, MaxBackoff time.Duration
	// Batch is the most deliveries one RunOnce sends. Default 100.
	Batch int
	// Concurrency is how many requests one worker has in flight, so that a slow receiver does
	// not hold up the others. Default 4.
	Concurrency int
	// PollInterval is how often Run looks for due rows when not woken. Default 1s.
	PollInterval time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

func (c *WorkerConfig) setDefaults() {
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Second
	}
	if c.Egress == nil {
		c.Egress = NewEgress(EgressConfig{})
	}
	if c.Now == nil {
		c.Now = func() time.Time { return time.Now().UTC() }
	}
	if c.Backoff <= 0 {
		c.Backoff = 5 * time.Second
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = time.Hour
	}
	if c.Batch <= 0 {
		c.Batch = 100
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 4
	}
	if c.PollInterval <= 0 {
		c.PollInterval = time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Worker sends the outbox's due deliveries. Several workers (processes) may run on one database.
type Worker struct {
	cfg     WorkerConfig
	client  *http.Client
	wake    chan struct{}
	metrics *workerMetrics
}

// NewWorker returns a worker; cfg.DB is required. It registers its metrics on cfg.Registerer,
// if set (one worker per registerer).
func NewWorker(cfg WorkerConfig) (*Worker, error) {
	if cfg.DB == nil {
		return nil, errors.New("webhooks: NewWorker: nil DB")
	}
	cfg.setDefaults()
	m, err := newWorkerMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	return &Worker{cfg: cfg, client: cfg.Egress.Client(cfg.Timeout), wake: make(chan struct{}, 1), metrics: m}, nil
}

// Wake makes a running Run look for due rows now. It never blocks.
func (w *Worker) Wake() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Run sends due deliveries until ctx is done, then returns nil. A database error is logged and
// retried at the next poll.
func (w *Worker) Run(ctx context.Context) error {
	t := time.NewTicker(w.cfg.PollInterval)
	defer t.Stop()
	for {
		n, err := w.RunOnce(ctx)
		if err != nil && ctx.Err() == nil {
			w.cfg.Logger.Error("webhooks: delivery round failed", "err", err)
		}
		if n == w.cfg.Batch {
			continue // more may be due
		}
		select {
		case <-ctx.Done():
			return nil
		case <-w.wake:
		case <-t.C:
		}
	}
}

// due is a delivery to send: id is the table's key (never shown to tenants), webhookID and
// seq name it as the tenant's delivery log does.
type due struct {
	id, seq                      int64
	webhookID                    string
	attempts                     int
	eventID, eventType, url, sec string
	payload                      string
}

// RunOnce sends the deliveries due at Now (up to Batch), Concurrency at a time, and records each
// attempt. It returns how many it attempted (rows claimed by another worker are skipped) and the
// first database error.
func (w *Worker) RunOnce(ctx context.Context) (int, error) {
	now := w.cfg.Now()
	rows, err := w.cfg.DB.QueryContext(ctx, `SELECT d.id, d.webhook_id, d.seq, d.attempts, d.event_id, d.event_type, d.payload, h.url, h.secret
FROM webhook_deliveries d JOIN webhooks h ON h.id = d.webhook_id
WHERE d.delivered_at_us = 0 AND h.deleted_at_us = 0 AND d.next_attempt_at_us <= $1 AND d.claimed_until_us <= $1
ORDER BY d.next_attempt_at_us, d.id LIMIT $2`, now.UnixMicro(), w.cfg.Batch)
	if err != nil {
		return 0, fmt.Errorf("webhooks: due deliveries: %w", err)
	}
	var list []due
	for rows.Next() {
		var d due
		if err := rows.Scan(&d.id, &d.webhookID, &d.seq, &d.attempts, &d.eventID, &d.eventType, &d.payload, &d.url, &d.sec); err != nil {
			rows.Close()
			return 0, fmt.Errorf("webhooks: due deliveries: %w", err)
		}
		list = append(list, d)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("webhooks: due deliveries: %w", err)
	}
	var (
		mu       sync.Mutex
		n        int
		firstErr error
		wg       sync.WaitGroup
		slots    = make(chan struct{}, w.cfg.Concurrency)
	)
	for _, d := range list {
		if ctx.Err() != nil {
			break
		}
		slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-slots; wg.Done() }()
			ok, err := w.claim(ctx, d, now)
			if err == nil && ok {
				mu.Lock()
				n++
				mu.Unlock()
				err = w.deliver(ctx, d)
			}
			if err != nil {
				mu.Lock()
				firstErr = cmp.Or(firstErr, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return n, firstErr
}

// claim reserves a row for one request's worth of time (twice the timeout).
func (w *Worker) claim(ctx context.Context, d due, now time.Time) (bool, error) {
	res, err := w.cfg.DB.ExecContext(ctx, `UPDATE webhook_deliveries SET claimed_until_us = $1
WHERE id = $2 AND delivered_at_us = 0 AND claimed_until_us <= $3`, now.Add(2*w.cfg.Timeout).UnixMicro(), d.id, now.UnixMicro())
	if err != nil {
		return false, fmt.Errorf("webhooks: claim delivery %s/%d: %w", d.webhookID, d.seq, err)
	}
	k, err := res.RowsAffected()
	return k == 1, err
}

// deliver sends one delivery and records the attempt.
func (w *Worker) deliver(ctx context.Context, d due) error {
	start := time.Now()
	status, sendErr := w.send(ctx, d)
	w.metrics.latency.Observe(time.Since(start).Seconds())
	at := w.cfg.Now()
	attempt := d.attempts + 1
	errText := ""
	if sendErr != nil {
		errText = ErrorClass(status, sendErr)
		w.metrics.failures.WithLabelValues(errText).Inc()
		w.metrics.attempts.WithLabelValues("failed").Inc()
		// The full error stays in the operator's log; the tenant's delivery log gets the class.
		w.cfg.Logger.Debug("webhooks: delivery attempt failed", "webhook", d.webhookID, "seq", d.seq, "event", d.eventID,
			"attempt", attempt, "status", status, "class", errText, "err", sendErr)
	} else {
		w.metrics.attempts.WithLabelValues("delivered").Inc()
	}
	tx, err := w.cfg.DB.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, `INSERT INTO webhook_attempts (delivery_id, attempt, at_us, status_code, error) VALUES ($1, $2, $3, $4, $5)`,
		d.id, attempt, at.UnixMicro(), status, errText); err != nil {
		return fmt.Errorf("webhooks: log attempt %d of delivery %s/%d: %w", attempt, d.webhookID, d.seq, err)
	}
	delivered, next := int64(0), at.Add(w.backoff(attempt)).UnixMicro()
	if sendErr == nil {
		delivered, next = at.UnixMicro(), 0
	}
	if _, err := tx.ExecContext(ctx, `UPDATE webhook_deliveries SET attempts = $1, last_status = $2, last_error = $3,
delivered_at_us = $4, next_attempt_at_us = $5, claimed_until_us = 0 WHERE id = $6`,
		attempt, status, errText, delivered, next, d.id); err != nil {
		return fmt.Errorf("webhooks: update delivery %s/%d: %w", d.webhookID, d.seq, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("webhooks: commit delivery %s/%d: %w", d.webhookID, d.seq, err)
	}
	return nil
}

// backoff is the delay after the attempt-th failed attempt.
func (w *Worker) backoff(attempt int) time.Duration {
	d := w.cfg.Backoff
	for i := 1; i < attempt && d < w.cfg.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, w.cfg.MaxBackoff)
}

// send POSTs the delivery; a non-2xx status is an error.
func (w *Worker) send(ctx context.Context, d due) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
	defer cancel()
	body := []byte(d.payload)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "waqueue-webhooks/1")
	req.Header.Set(HeaderEventID, d.eventID)
	req.Header.Set(HeaderEventType, d.eventType)
	req.Header.Set(HeaderSignature, Sign(d.sec, w.cfg.Now(), body))
	resp, err := w.client.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, fmt.Errorf("webhooks: receiver answered %d", resp.StatusCode)
	}
	return resp.StatusCode, nil
}

// Error classes of a failed attempt, as the delivery log and the
// waqueue_webhook_failures_total{class} metric show them.
const (
	ErrorRefused  = "address_refused"       // the egress policy refused the receiver's address
	ErrorDNS      = "dns_failed"            // the host did not resolve
	ErrorConnect  = "connect_failed"        // no connection (refused, unreachable, reset)
	ErrorTimeout  = "timeout"               // no answer within the timeout
	ErrorTLS      = "tls_failed"            // the TLS handshake or certificate failed
	ErrorRedirect = "redirect_not_followed" // a 3xx answer: redirects are never followed
	ErrorStatus   = "http_status"           // any other non-2xx answer (the status code says which)
	ErrorOther    = "request_failed"        // anything else (the node's log has the detail)
)

// ErrorClass returns the class of a failed attempt that got status (0 without an answer) and
// err.
func ErrorClass(status int, err error) string {
	var dnsErr *net.DNSError
	var netErr net.Error
	var tlsRec tls.RecordHeaderError
	var certErr *tls.CertificateVerificationError
	var opErr *net.OpError
	switch {
	case status >= 300 && status <= 399:
		return ErrorRedirect
	case status != 0:
		return ErrorStatus
	case errors.Is(err, ErrEgressRefused):
		return ErrorRefused
	case errors.As(err, &dnsErr), errors.Is(err, errUnresolved):
		return ErrorDNS
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return ErrorTimeout
	case errors.As(err, &certErr), errors.As(err, &tlsRec), strings.Contains(err.Error(), "tls:"):
		return ErrorTLS
	case errors.As(err, &opErr), errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF):
		return ErrorConnect
	}
	return ErrorOther
}

type workerMetrics struct {
	attempts *prometheus.CounterVec
	failures *prometheus.CounterVec
	latency  prometheus.Histogram
}

func newWorkerMetrics(reg prometheus.Registerer) (*workerMetrics, error) {
	m := &workerMetrics{
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "waqueue", Subsystem: "webhook", Name: "attempts_total",
			Help: "Webhook delivery attempts by result (delivered, failed).",
		}, []string{"result"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "waqueue", Subsystem: "webhook", Name: "failures_total",
			Help: "Failed webhook delivery attempts by error class (address_refused, dns_failed, connect_failed, timeout, tls_failed, redirect_not_followed, http_status, request_failed).",
		}, []string{"class"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "waqueue", Subsystem: "webhook", Name: "attempt_duration_seconds",
			Help:    "Duration of webhook delivery attempts (request to answer or failure), in real time.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 13),
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.attempts, m.failures, m.latency} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("webhooks: register metrics: %w", err)
			}
		}
	}
	return m, nil
}

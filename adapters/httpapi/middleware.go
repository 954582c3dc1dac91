package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/waqueue/waqueue/adapters/apikeys"
	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
)

type ctxKey int

const (
	keyRequestID ctxKey = iota
	keyState
)

// reqState is what the edge middleware learns while the request runs.
type reqState struct {
	principal auth.Principal
	err       error // the error a handler returned (logged at the edge)
}

func requestID(ctx context.Context) string {
	id, _ := ctx.Value(keyRequestID).(string)
	return id
}

func state(ctx context.Context) *reqState {
	st, _ := ctx.Value(keyState).(*reqState)
	if st == nil {
		return &reqState{}
	}
	return st
}

// maxRequestIDLen bounds an honoured X-Request-Id.
const maxRequestIDLen = 128

// validRequestID accepts printable ASCII without spaces, up to maxRequestIDLen.
func validRequestID(id string) bool {
	if id == "" || len(id) > maxRequestIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] > '~' {
			return false
		}
	}
	return true
}

func newRequestID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// statusWriter records the status written.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the underlying writer (flushing exports).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// edge is the one middleware at the edge: request id, panic recovery, one log line and the
// metrics of every request.
func (s *server) edge(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := r.Header.Get("X-Request-Id")
		if !validRequestID(id) {
			id = newRequestID()
		}
		st := &reqState{}
		ctx := context.WithValue(r.Context(), keyRequestID, id)
		ctx = context.WithValue(ctx, keyState, st)
		ctx = commands.WithCorrelationID(ctx, id)
		r = r.WithContext(ctx)
		w.Header().Set("X-Request-Id", id)
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				st.err = fmt.Errorf("httpapi: panic: %v", v)
				if sw.status == 0 {
					writeProblem(sw, r, &Problem{Status: http.StatusInternalServerError, Code: CodeInternal,
						Detail: "internal error; see the server log for this request id"})
				}
			}
			status := sw.status
			if status == 0 {
				status = http.StatusOK
			}
			route := r.Pattern
			if route == "" || route == "/" {
				route = "unmatched"
			}
			elapsed := time.Since(start)
			s.metrics.requests.WithLabelValues(route, strconv.Itoa(status)).Inc()
			s.metrics.duration.WithLabelValues(route).Observe(elapsed.Seconds())
			level := slog.LevelInfo
			if status >= 500 {
				level = slog.LevelError
			}
			if !s.log.Enabled(r.Context(), level) {
				return // the line would be discarded: build nothing for it
			}
			attrs := []slog.Attr{
				slog.String("request_id", id), slog.String("method", r.Method), slog.String("path", r.URL.Path),
				slog.String("route", route), slog.Int("status", status), slog.Int64("bytes", sw.bytes),
				slog.Duration("duration", elapsed),
			}
			if st.principal.ID != "" {
				attrs = append(attrs, slog.String("tenant", st.principal.TenantID), slog.String("principal", st.principal.ID))
			}
			if st.err != nil {
				attrs = append(attrs, slog.String("error", st.err.Error()))
			}
			s.log.LogAttrs(r.Context(), level, "http request", attrs...)
		}()
		next.ServeHTTP(sw, r)
	})
}

// endpoint authenticates (unless the route is public), checks the route's right, runs the
// handler and maps its error.
func (s *server) endpoint(rt Route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st := state(r.Context())
		fail := func(err error) {
			st.err = err
			writeProblem(w, r, toProblem(err))
		}
		if !rt.Public {
			id, err := s.authenticate(r)
			if err != nil {
				fail(err)
				return
			}
			p := s.platformOperator(id.Principal)
			st.principal = p
			if wait, ok := s.allowRate(r.Context(), p.TenantID, id.RateLimit); !ok {
				fail(rateLimited(w, wait))
				return
			}
			if !p.Can(rt.Right) {
				fail(&auth.DeniedError{Principal: p, Right: rt.Right, TenantID: p.TenantID})
				return
			}
			if rt.platform && !p.IsPlatformOperator() {
				fail(notPlatform)
				return
			}
			r = r.WithContext(commands.WithPrincipal(r.Context(), p))
		}
		if len(rt.reads) > 0 {
			if err := s.awaitMinPosition(w, r, rt.reads); err != nil {
				fail(err)
				return
			}
		}
		if err := rt.handle(s, w, r); err != nil {
			fail(err)
		}
	})
}

// authenticate turns the bearer credential into its identity (principal and the tenant's rate
// limit). A key of a suspended tenant is apikeys.ErrTenantSuspended (403 tenant_suspended).
func (s *server) authenticate(r *http.Request) (apikeys.Identity, error) {
	h := r.Header.Get("Authorization")
	scheme, cred, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || cred == "" {
		return apikeys.Identity{}, commands.ErrUnauthenticated
	}
	return s.d.Keys.Identify(r.Context(), strings.TrimSpace(cred))
}

// principal returns the authenticated principal of r.
func principal(r *http.Request) auth.Principal {
	p, _ := commands.PrincipalFromContext(r.Context())
	return p
}

// connKey returns the tenant-scoped key (connection.Key) of the connection the path's {id}
// names in the caller's tenant: what the event store, the transports and the simulator know it
// by. It never names another tenant's connection.
func connKey(r *http.Request) string {
	return connection.Key(principal(r).TenantID, r.PathValue("id"))
}

type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newMetrics(reg *prometheus.Registry) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "waqueue", Subsystem: "http", Name: "requests_total",
			Help: "HTTP requests by route pattern and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "waqueue", Subsystem: "http", Name: "request_duration_seconds",
			Help: "HTTP request durations by route pattern.", Buckets: prometheus.DefBuckets,
		}, []string{"route"}),
	}
	if err := reg.Register(m.requests); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return nil, fmt.Errorf("httpapi: register metrics: %w", err)
		}
		m.requests = are.ExistingCollector.(*prometheus.CounterVec)
	}
	if err := reg.Register(m.duration); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return nil, fmt.Errorf("httpapi: register metrics: %w", err)
		}
		m.duration = are.ExistingCollector.(*prometheus.HistogramVec)
	}
	return m, nil
}

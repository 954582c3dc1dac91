package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/waqueue/waqueue/adapters/pgcluster/pgtest"
	"github.com/waqueue/waqueue/adapters/server"
	"github.com/waqueue/waqueue/adapters/transport/transporttest"
	"github.com/waqueue/waqueue/internal/testwait"
)

// limitedNodes are two API nodes on one PostgreSQL database with one clock, and the
// platform operator's key (unlimited: no default limit).
type limitedNodes struct {
	t     *testing.T
	a, b  *server.Node
	clock *transporttest.ManualClock
	op    string
}

func newLimitedNodes(t *testing.T) *limitedNodes {
	ctx := context.Background()
	url := pgtest.URL(t)
	clock := transporttest.NewManualClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	// A lease may take as long as the machine needs: a slow one must not count as an outage.
	o := func(id string) server.Options {
		return server.Options{DB: url, NodeID: id, NoDispatcher: true, Now: clock.Now, RateLimitTimeout: testwait.Limit}
	}
	a := newNode(ctx, t, o("a"))
	b := newNode(ctx, t, o("b"))
	return &limitedNodes{t: t, a: a, b: b, clock: clock, op: a.AdminKey}
}

// call serves one request on n's handler.
func (l *limitedNodes) call(n *server.Node, method, path, key string, body any) *httptest.ResponseRecorder {
	l.t.Helper()
	var rd *bytes.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	} else {
		rd = bytes.NewReader(nil)
	}
	req := httptest.NewRequest(method, path, rd)
	req.Header.Set("Authorization", "Bearer "+key)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	rec := httptest.NewRecorder()
	n.Handler.ServeHTTP(rec, req)
	return rec
}

func (l *limitedNodes) must(n *server.Node, method, path string, body any, want int) *httptest.ResponseRecorder {
	l.t.Helper()
	rec := l.call(n, method, path, l.op, body)
	if rec.Code != want {
		l.t.Fatalf("%s %s: %d, want %d: %s", method, path, rec.Code, want, rec.Body)
	}
	return rec
}

// tenant creates a tenant with an admin key and sets its limit, through node a; it returns
// the key.
func (l *limitedNodes) tenant(id string, perSecond float64, burst int) string {
	l.t.Helper()
	l.must(l.a, "POST", "/v1/tenants", map[string]any{"id": id}, http.StatusCreated)
	var k struct {
		Secret string `json:"secret"`
	}
	if err := json.Unmarshal(l.must(l.a, "POST", "/v1/tenants/"+id+"/keys", map[string]any{"role": "admin"}, http.StatusCreated).Body.Bytes(), &k); err != nil {
		l.t.Fatal(err)
	}
	l.limit(id, perSecond, burst)
	return k.Secret
}

func (l *limitedNodes) limit(id string, perSecond float64, burst int) {
	l.t.Helper()
	l.must(l.a, "PATCH", "/v1/tenants/"+id, map[string]any{"rate_limit": map[string]any{"per_second": perSecond, "burst": burst}}, http.StatusOK)
}

// get asks GET /v1/connections with key through n at the clock's time: true if let through;
// a refusal must be 429 rate_limited with Retry-After 1.
func (l *limitedNodes) get(n *server.Node, key string) bool {
	l.t.Helper()
	rec := l.call(n, "GET", "/v1/connections", key, nil)
	switch rec.Code {
	case http.StatusOK:
		return true
	case http.StatusTooManyRequests:
		var p struct {
			Code string `json:"code"`
		}
		_ = json.Unmarshal(rec.Body.Bytes(), &p)
		if p.Code != "rate_limited" || rec.Header().Get("Retry-After") != "1" {
			l.t.Fatalf("429 %s with Retry-After %q, want rate_limited and 1", rec.Body, rec.Header().Get("Retry-After"))
		}
		return false
	}
	l.t.Fatalf("GET /v1/connections: %d %s", rec.Code, rec.Body)
	return false
}

// noFallbacks fails t if a node decided a request alone (its shared bucket unreachable).
func (l *limitedNodes) noFallbacks() {
	l.t.Helper()
	for _, n := range []*server.Node{l.a, l.b} {
		mfs, err := n.Registry.Gather()
		if err != nil {
			l.t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "waqueue_ratelimit_fallbacks_total" && mf.GetMetric()[0].GetCounter().GetValue() != 0 {
				l.t.Fatalf("node %s: %v requests decided without the shared bucket", n.Options.NodeID, mf.GetMetric()[0].GetCounter().GetValue())
			}
		}
	}
}

// TestRateLimitHoldsAcrossNodes: a tenant limited to 100/s, burst 50, asks 400 times a second
// through two nodes on one PostgreSQL database for 2 s of their clock. Together they let
// through at most the burst plus 2 s of the rate: 250 (the interval starts with the bucket
// full and no tokens leased; from any other start add at most one chunk, 5, per node). With a
// bucket per node it was twice that. Another tenant with the same limit, asking only at the
// end, gets its whole burst and then the same refusal (G9).
func TestRateLimitHoldsAcrossNodes(t *testing.T) {
	l := newLimitedNodes(t)
	busy := l.tenant("busy", 100, 50)
	calm := l.tenant("calm", 100, 50)
	allowed := 0
	for range 200 {
		for _, n := range []*server.Node{l.a, l.b, l.a, l.b} {
			if l.get(n, busy) {
				allowed++
			}
		}
		l.clock.Advance(10 * time.Millisecond)
	}
	if allowed > 250 || allowed < 230 {
		t.Errorf("the two nodes let %d requests through in 2 s, want at most 250 (50 + 100/s × 2 s) and at least 230", allowed)
	}
	got := 0
	for i := 0; ; i++ {
		if !l.get([]*server.Node{l.a, l.b}[i%2], calm) {
			break
		}
		got++
	}
	if got != 50 {
		t.Errorf("the calm tenant got %d requests through beside the busy one, want its burst, 50", got)
	}
	l.noFallbacks()
}

// TestRateLimitChangeAppliesAcrossNodes: a limit lowered through node a holds on node b at
// once, although b holds tokens leased under the old limit: over 3 s at 1/s, burst 2, the two
// nodes together let through at most 2 + 3. With a bucket per node each started full under
// the new limit and refilled alone (8 or more).
func TestRateLimitChangeAppliesAcrossNodes(t *testing.T) {
	l := newLimitedNodes(t)
	key := l.tenant("acme", 1000, 1000)
	for range 10 {
		if !l.get(l.b, key) {
			t.Fatal("refused under 1000/s")
		}
	}
	l.limit("acme", 1, 2)
	allowed := 0
	for range 30 {
		for _, n := range []*server.Node{l.a, l.b} {
			if l.get(n, key) {
				allowed++
			}
		}
		l.clock.Advance(100 * time.Millisecond)
	}
	if allowed > 5 || allowed < 4 {
		t.Errorf("%d requests let through in 3 s after the limit became 1/s burst 2, want 4 or 5", allowed)
	}
	l.noFallbacks()
}

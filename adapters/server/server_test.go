package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/httpapi"
	"github.com/waqueue/waqueue/adapters/httpapi/apitest"
	"github.com/waqueue/waqueue/adapters/pgcluster/pgtest"
	"github.com/waqueue/waqueue/adapters/server"
	"github.com/waqueue/waqueue/adapters/simulator"
	"github.com/waqueue/waqueue/internal/testwait"
)

// TestStory plays the README's Clear Queue story against a fully composed node — the same
// assembly `waqueue serve` runs — on both engines: register, broadcast, a simulated ban
// mid-broadcast holds the queue, a clear purges exactly what was pending, and the report and the
// audit trail agree with what the simulator sent.
func TestStory(t *testing.T) {
	for _, engine := range []string{"sqlite", "postgres"} {
		t.Run(engine, func(t *testing.T) {
			t.Parallel()
			o := server.Options{SimulatorRoutes: true, NoPacing: true}
			if engine == "postgres" {
				o.DB = pgtest.URL(t)
			}
			ctx, cancel := context.WithTimeout(context.Background(), testwait.AtLeast(3*time.Minute))
			defer cancel()
			node := startNode(ctx, t, o)
			srv := httptest.NewServer(contract(t, node.Handler))
			defer srv.Close()
			msrv := httptest.NewServer(node.MetricsHandler) // the private metrics listener
			defer msrv.Close()
			c := &client{t: t, base: srv.URL, key: node.AdminKey}
			c.do("GET", "/metrics", nil, nil, http.StatusNotFound, nil) // never on the API's port

			const phone = "+491701234567"
			c.do("POST", "/v1/connections", map[string]any{"id": "shop-1", "phone": phone}, nil, http.StatusCreated, nil)
			waitFor(t, ctx, "connection active", func() bool {
				var card map[string]any
				c.do("GET", "/v1/connections/shop-1", nil, nil, 200, &card)
				return card["link_status"] == "active"
			})
			// Slow the simulated sends so that the ban lands mid-broadcast.
			node.Simulator.SetScript("shop-1", simScriptLatency(2*time.Millisecond))

			const total = 400
			recipients := make([]string, total)
			for i := range recipients {
				recipients[i] = fmt.Sprintf("+4917098%05d", i+1)
			}
			var bc struct {
				BroadcastID string `json:"broadcast_id"`
				Count       int    `json:"count"`
			}
			c.do("POST", "/v1/connections/shop-1/broadcasts", map[string]any{"recipients": recipients, "text": "Sale today"},
				map[string]string{"Idempotency-Key": "sale-1"}, http.StatusAccepted, &bc)
			if bc.Count != total {
				t.Fatalf("broadcast count = %d, want %d", bc.Count, total)
			}
			waitFor(t, ctx, "some messages sent", func() bool { return len(node.Simulator.Sends()) >= 20 })
			c.do("POST", "/v1/connections/shop-1/simulator/ban", map[string]any{"kind": "temporary", "expires_in": "1h"}, nil, 200, nil)
			waitFor(t, ctx, "queue held", func() bool {
				var card map[string]any
				c.do("GET", "/v1/connections/shop-1", nil, nil, 200, &card)
				return card["queue_status"] == "held" && card["link_status"] == "banned"
			})
			sentAtBan := len(node.Simulator.Sends())
			if sentAtBan >= total {
				t.Fatalf("the ban landed after the broadcast was sent (%d sends); nothing to clear", sentAtBan)
			}

			var clr struct {
				ClearID string `json:"clear_id"`
			}
			c.do("POST", "/v1/connections/shop-1/queue/clear", map[string]any{"reason": "wrong", "confirm": "+490000"},
				map[string]string{"Idempotency-Key": "clear-0"}, http.StatusUnprocessableEntity, nil)
			c.do("POST", "/v1/connections/shop-1/queue/clear", map[string]any{"reason": "banned mid-broadcast", "confirm": phone},
				map[string]string{"Idempotency-Key": "clear-1"}, http.StatusAccepted, &clr)
			var report map[string]any
			waitFor(t, ctx, "clear report", func() bool {
				report = nil
				c.do("GET", "/v1/connections/shop-1/clears/"+clr.ClearID, nil, nil, 200, &report)
				return report["status"] == "completed" || report["status"] == "done"
			})
			sent := len(node.Simulator.Sends())
			if sent != sentAtBan {
				t.Fatalf("simulator sent %d messages after the ban (G7)", sent-sentAtBan)
			}
			purged := intField(t, report, "purged_count")
			inFlight := intField(t, report, "in_flight_count")
			notSent := intField(t, report, "not_sent_count")
			// Messages in flight at the request were handed to the simulator (or not) before the
			// ban; a message whose hand-over the ban refused is failed not_sent by the clear; every
			// other message was either sent before the ban or purged.
			if purged+sent+notSent > total || purged+sent+notSent < total-inFlight {
				t.Fatalf("report does not reconcile: purged %d + sent %d + not sent %d (+ in flight %d) != %d; report %v",
					purged, sent, notSent, inFlight, total, report)
			}
			var seen map[string]bool
			waitFor(t, ctx, "audit trail complete", func() bool {
				var audit struct {
					Entries []map[string]any `json:"entries"`
				}
				c.do("GET", "/v1/audit?connection=shop-1", nil, nil, 200, &audit)
				seen = map[string]bool{}
				for _, e := range audit.Entries {
					for _, k := range []string{"type", "event_type"} {
						if typ, ok := e[k].(string); ok {
							seen[typ] = true
						}
					}
				}
				return seen["QueueCleared"]
			})
			for _, want := range []string{"ConnectionBanned", "QueueHeld", "ClearQueueRequested", "QueueCleared"} {
				if !seen[want] {
					t.Errorf("audit trail lacks %s; has %v", want, seen)
				}
			}
			// The metrics tell the same story: one clear, its purged messages, the ban, the depth,
			// and no series names a connection.
			var metrics []byte
			waitFor(t, ctx, "clear in /metrics", func() bool {
				res, err := http.Get(msrv.URL + "/metrics")
				if err != nil {
					t.Fatal(err)
				}
				metrics, _ = io.ReadAll(res.Body)
				res.Body.Close()
				return strings.Contains(string(metrics), "waqueue_clear_duration_seconds_count 1")
			})
			for _, want := range []string{
				`waqueue_clears_total{scope="queue"} 1`,
				fmt.Sprintf("waqueue_purged_messages_total %d", purged),
				`waqueue_bans_total{kind="temporary"} 1`,
				"waqueue_queue_depth 0",
				"waqueue_clear_duration_seconds_count 1",
				`waqueue_projection_lag_events{projection="cards"}`,
				`waqueue_projection_events_applied_total{projection="cards"}`,
				`waqueue_router_messages_total{handler="projections_group",result="ok"}`,
				"waqueue_build_info{goversion=\"" + runtime.Version() + "\"",
			} {
				if !strings.Contains(string(metrics), want) {
					t.Errorf("/metrics lacks %q", want)
				}
			}
			if strings.Contains(string(metrics), "shop-1") || strings.Contains(string(metrics), `connection="`) {
				t.Errorf("/metrics labels a series with a connection id")
			}
			var verify map[string]any
			c.do("GET", "/v1/audit/verify", nil, nil, 200, &verify)
			if verify["ok"] != true {
				t.Errorf("audit verify = %v", verify)
			}
		})
	}
}

type client struct {
	t         *testing.T
	base, key string
	// pos is the greatest Waqueue-Position answered so far, sent as Waqueue-Min-Position so
	// that every read sees the writes before it (read your writes is asked for explicitly).
	pos eventstore.Position
}

func (c *client) do(method, path string, body any, headers map[string]string, want int, out any) {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, c.base+path, rd)
	req.Header.Set("Authorization", "Bearer "+c.key)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if !c.pos.IsZero() {
		req.Header.Set(httpapi.HeaderMinPosition, httpapi.FormatPosition(c.pos))
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	if p, ok := httpapi.ParsePosition(res.Header.Get(httpapi.HeaderPosition)); ok && c.pos.Less(p) {
		c.pos = p
	}
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != want {
		c.t.Fatalf("%s %s: status %d, want %d: %s", method, path, res.StatusCode, want, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			c.t.Fatalf("%s %s: decode %q: %v", method, path, b, err)
		}
	}
}

func waitFor(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func intField(t *testing.T, m map[string]any, key string) int {
	t.Helper()
	for _, k := range []string{key, strings.TrimSuffix(key, "_count")} {
		if v, ok := m[k].(float64); ok {
			return int(v)
		}
	}
	if r, ok := m["report"].(map[string]any); ok {
		return intField(t, r, key)
	}
	t.Fatalf("report has no %s: %v", key, m)
	return 0
}

func simScriptLatency(d time.Duration) simulator.Script { return simulator.Script{Latency: d} }

// contract checks every response of h against docs/openapi.yaml (see apitest.Contract).
func contract(t *testing.T, h http.Handler) http.Handler {
	t.Helper()
	c, err := apitest.LoadContract()
	if err != nil {
		t.Fatal(err)
	}
	return c.Middleware(h, func(err error) { t.Errorf("%v", err) })
}

package e2e_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/eventstore/esdb/esdbtest"
	"github.com/waqueue/waqueue/adapters/pgcluster/pgtest"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/internal/testwait"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const (
	// total is the size of the broadcast; banAfter how many of its messages are dispatched
	// before the ban.
	total, banAfter = 500, 120
	connID          = "esdb-shop"
	phone           = "+491701234567"
	// patience bounds every wait of the test; the machine is shared, so it is generous.
	patience = 90 * time.Second
)

// dispatchGate is the backing store of the EventStoreDB test server with a turnstile on
// MessageDispatched: it lets the first `after` successful dispatch appends through and holds the
// next one until released. The dispatcher appends MessageDispatched before it hands a message to
// the transport (G1), one message at a time per connection, so while the gate is closed exactly
// `after` messages have been handed over and the test can ban the connection at a known point.
// Every other append passes untouched — the ban and the hold are recorded while the gate holds
// the dispatch, which then meets a stream that moved on.
type dispatchGate struct {
	eventstore.Store
	after int

	mu      sync.Mutex
	passed  int
	once    sync.Once
	blocked chan struct{} // closed when a dispatch append first waits at the gate
	release chan struct{} // closed by the test to open the gate
}

func newDispatchGate(st eventstore.Store, after int) *dispatchGate {
	return &dispatchGate{Store: st, after: after, blocked: make(chan struct{}), release: make(chan struct{})}
}

func (g *dispatchGate) Append(ctx context.Context, stream string, expected eventstore.ExpectedRevision, events ...eventstore.EventData) (eventstore.AppendResult, error) {
	dispatch := false
	for _, e := range events {
		dispatch = dispatch || e.Type == connection.TypeMessageDispatched
	}
	if !dispatch {
		return g.Store.Append(ctx, stream, expected, events...)
	}
	g.mu.Lock()
	full := g.passed >= g.after
	g.mu.Unlock()
	if full {
		g.once.Do(func() { close(g.blocked) })
		select {
		case <-g.release:
		case <-ctx.Done():
			return eventstore.AppendResult{}, ctx.Err()
		}
	}
	res, err := g.Store.Append(ctx, stream, expected, events...)
	if err == nil && !full {
		g.mu.Lock()
		g.passed++
		g.mu.Unlock()
	}
	return res, err
}

// TestServeOnEventStoreDB is the end-to-end proof of the esdb adapter: `waqueue serve` (the real
// binary) with WAQUEUE_EVENTSTORE=esdb://… and PostgreSQL read models, driven over HTTP. A
// broadcast of 500 is sending; a simulated temporary ban after 120 dispatches holds the queue;
// a clear confirmed with the phone number purges exactly the rest. The clear report, the
// broadcast's progress and the events stored in EventStoreDB reconcile; the audit trail shows
// ban, hold, clear request and QueueCleared, and its hash chain verifies.
func TestServeOnEventStoreDB(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testwait.AtLeast(4*time.Minute))
	defer cancel()

	backing := esdbtest.NewSQLiteStore(t, nil)
	gate := newDispatchGate(backing, banAfter)
	es := esdbtest.StartServer(t, esdbtest.Options{Store: gate})
	pgURL := pgtest.URL(t)

	dataDir := t.TempDir()
	api := startServe(t, ctx, dataDir,
		[]string{"WAQUEUE_EVENTSTORE=" + es.ConnString()},
		"--db", pgURL, "--data-dir", dataDir, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--no-pacing", "--log-level", "warn")
	key, err := os.ReadFile(filepath.Join(dataDir, "admin.key"))
	if err != nil {
		t.Fatalf("bootstrap admin key: %v", err)
	}
	c := &client{t: t, ctx: ctx, base: api, key: strings.TrimSpace(string(key))}

	// Register a connection (the simulator pairs it on its own) and broadcast to 500 numbers.
	c.want(201, "POST", "/v1/connections", map[string]any{"id": connID, "phone": phone}, nil)
	rcpt := make([]string, total)
	for i := range rcpt {
		rcpt[i] = fmt.Sprintf("+4917%08d", 10_000_000+i)
	}
	var bc struct {
		BroadcastID string `json:"broadcast_id"`
		Count       int    `json:"count"`
	}
	c.want(202, "POST", "/v1/connections/"+connID+"/broadcasts",
		map[string]any{"recipients": rcpt, "text": "sale today"}, map[string]string{"Idempotency-Key": "sale-1"}).decode(&bc)
	if bc.Count != total || bc.BroadcastID == "" {
		t.Fatalf("broadcast answer %+v, want %d recipients", bc, total)
	}

	// After banAfter dispatches the gate holds the next one: ban the connection now, then let
	// that dispatch through. It is recorded, but the simulator refuses the message (the
	// connection is banned), so the dispatcher records it failed, not sent; the ban holds the
	// queue and nothing more is dispatched.
	select {
	case <-gate.blocked:
	case <-time.After(patience):
		t.Fatalf("the dispatcher did not reach message %d within %v (dispatched %d)", banAfter+1, patience, gate.dispatched())
	}
	c.want(200, "POST", "/v1/connections/"+connID+"/simulator/ban", map[string]any{"kind": "temporary", "expires_in": "2h"}, nil)
	close(gate.release)
	const dispatched = banAfter + 1
	var card struct {
		LinkStatus  string `json:"link_status"`
		QueueStatus string `json:"queue_status"`
		Pending     int    `json:"pending"`
		InFlight    int    `json:"in_flight"`
	}
	c.eventually("the ban holds the queue", func() bool {
		c.want(200, "GET", "/v1/connections/"+connID, nil, nil).decode(&card)
		return card.LinkStatus == "banned" && card.QueueStatus == "held" && card.InFlight == 0
	})
	var queue struct {
		Status   string `json:"status"`
		Pending  int    `json:"pending"`
		InFlight int    `json:"in_flight"`
	}
	c.eventually("the queue settles", func() bool {
		c.want(200, "GET", "/v1/connections/"+connID+"/queue", nil, nil).decode(&queue)
		return queue.InFlight == 0 && queue.Pending == total-dispatched
	})
	if queue.Status != "held" || gate.dispatched() != banAfter {
		t.Fatalf("queue %+v after the ban with %d dispatches before it; want held after %d", queue, gate.dispatched(), banAfter)
	}

	// Clear, confirmed with the connection's number, and poll the report.
	var clr struct {
		ClearID string `json:"clear_id"`
	}
	clrRes := c.want(202, "POST", "/v1/connections/"+connID+"/queue/clear",
		map[string]any{"reason": "banned mid-broadcast", "confirm": phone}, map[string]string{"Idempotency-Key": "clear-after-ban"})
	clrRes.decode(&clr)
	// The answer comes once the request is durable, before the read models have it: the
	// report is read at least at the request's position (read-your-writes, docs/api.md).
	atClear := map[string]string{"Waqueue-Min-Position": clrRes.header.Get("Waqueue-Position")}
	var done struct {
		Status string `json:"status"`
		Report struct {
			ClearID       string `json:"clear_id"`
			PurgedCount   int    `json:"purged_count"`
			InFlightCount int    `json:"in_flight_count"`
			Reason        string `json:"reason"`
			RequestedBy   string `json:"requested_by"`
		} `json:"report"`
	}
	c.eventually("the clear report", func() bool {
		c.want(200, "GET", "/v1/connections/"+connID+"/clears/"+clr.ClearID, nil, atClear).decode(&done)
		return done.Status == "done"
	})
	rep := done.Report
	if rep.ClearID != clr.ClearID || rep.Reason != "banned mid-broadcast" || rep.RequestedBy == "" {
		t.Errorf("clear report %+v, want clear %s with its reason and requester", rep, clr.ClearID)
	}
	if rep.PurgedCount != total-dispatched || rep.InFlightCount != 0 {
		t.Errorf("report purged %d, in flight %d; want %d, 0", rep.PurgedCount, rep.InFlightCount, total-dispatched)
	}

	// The broadcast's progress reconciles with the report.
	var prog struct {
		Count, Queued, Dispatched, Sent, Delivered, Read, Failed, Purged, Expired, Unknown int
	}
	c.eventually("broadcast progress includes the clear", func() bool {
		c.want(200, "GET", "/v1/broadcasts/"+bc.BroadcastID, nil, nil).decode(&prog)
		return prog.Queued == 0 && prog.Dispatched == 0 && prog.Purged == rep.PurgedCount
	})
	acked := prog.Sent + prog.Delivered + prog.Read
	if got := rep.PurgedCount + acked + prog.Failed + prog.Unknown + rep.InFlightCount; got != total || prog.Count != total {
		t.Errorf("purged %d + sent %d + failed %d + unknown %d + in flight %d = %d, want %d (progress %+v)",
			rep.PurgedCount, acked, prog.Failed, prog.Unknown, rep.InFlightCount, got, total, prog)
	}
	if acked != banAfter || prog.Failed+prog.Unknown != 1 {
		t.Errorf("sent %d, failed %d, unknown %d; want %d sent before the ban and the one dispatched into it failed",
			acked, prog.Failed, prog.Unknown, banAfter)
	}

	// The events are in EventStoreDB (the server's backing store), not in PostgreSQL.
	stored := countTypes(t, ctx, backing, connection.StreamName(connID))
	// The broadcast's messages are BroadcastQueued chunks (connection.BroadcastChunk each).
	if chunks := (total + connection.BroadcastChunk - 1) / connection.BroadcastChunk; stored[connection.TypeBroadcastQueued] != chunks || stored[connection.TypeMessageDispatched] != dispatched ||
		stored[connection.TypeQueueCleared] != 1 || stored[connection.TypeConnectionBanned] != 1 {
		t.Errorf("EventStoreDB holds %v for %s; want the chunks of %d queued, %d dispatched, one ban, one QueueCleared",
			stored, connID, total, dispatched)
	}
	if sent := stored[connection.TypeMessageSent]; sent != acked {
		t.Errorf("EventStoreDB holds %d MessageSent, the broadcast's progress says %d", sent, acked)
	}

	// The audit trail tells the story in order; its hash chain verifies.
	var types []string
	var auditCleared struct {
		PurgedCount uint64 `json:"purged_count"`
	}
	c.eventually("the audit trail has the clear", func() bool {
		types = types[:0]
		body := c.want(200, "GET", "/v1/audit?format=jsonl&connection="+connID, nil, nil).body
		for _, line := range strings.Split(strings.TrimSpace(string(body)), "\n") {
			if line == "" {
				continue
			}
			var e struct {
				EventType string          `json:"event_type"`
				Details   json.RawMessage `json:"details"`
			}
			if err := json.Unmarshal([]byte(line), &e); err != nil {
				t.Fatalf("audit line %q: %v", line, err)
			}
			types = append(types, e.EventType)
			if e.EventType == connection.TypeQueueCleared {
				if err := json.Unmarshal(e.Details, &auditCleared); err != nil {
					t.Fatalf("QueueCleared details %s: %v", e.Details, err)
				}
			}
		}
		return len(types) > 0 && types[len(types)-1] == connection.TypeQueueCleared
	})
	want := []string{connection.TypeConnectionBanned, connection.TypeQueueHeld, connection.TypeClearQueueRequested, connection.TypeQueueCleared}
	if !subsequence(types, want) {
		t.Errorf("audit trail %v does not hold %v in order", types, want)
	}
	if auditCleared.PurgedCount != uint64(rep.PurgedCount) {
		t.Errorf("audit QueueCleared purged %d, report %d", auditCleared.PurgedCount, rep.PurgedCount)
	}
	var verify struct {
		OK      bool `json:"ok"`
		Checked int  `json:"checked"`
	}
	c.want(200, "GET", "/v1/audit/verify", nil, nil).decode(&verify)
	if !verify.OK || verify.Checked < len(want) {
		t.Errorf("audit verify %+v, want ok over at least %d entries", verify, len(want))
	}
}

// envBinary names a prebuilt waqueue binary to run instead of building cmd/waqueue (for a CI
// that builds once, or a race-enabled build: go build -race -o … ./cmd/waqueue).
const envBinary = "WAQUEUE_E2E_BINARY"

// startServe builds cmd/waqueue (or takes $WAQUEUE_E2E_BINARY), runs `waqueue serve` with args and the extra environment,
// waits until it serves, and returns its base URL. The process is interrupted when t ends and
// must shut down cleanly.
func startServe(t *testing.T, ctx context.Context, dir string, env []string, args ...string) string {
	t.Helper()
	bin := os.Getenv(envBinary)
	if bin == "" {
		bin = filepath.Join(t.TempDir(), "waqueue")
		build := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/waqueue/waqueue/cmd/waqueue")
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("go build ./cmd/waqueue: %v\n%s", err, out)
		}
	}
	cmd := exec.Command(bin, append([]string{"serve"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	logPath := filepath.Join(dir, "serve.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = logFile
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start waqueue serve: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("waqueue serve did not shut down cleanly: %v", err)
			}
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			t.Errorf("waqueue serve ignored the interrupt for 30s")
		}
		_ = logFile.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logPath); err == nil {
				t.Logf("waqueue serve log (head):\n%s\n(tail):\n%s", head(b, 6000), tail(b, 6000))
			}
		}
	})

	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		sent := false
		for sc.Scan() {
			if _, rest, ok := strings.Cut(sc.Text(), "serving "); ok && !sent {
				addr <- strings.Fields(rest)[0]
				sent = true
			}
		}
		// Keep draining so the process never blocks on a full pipe.
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case a := <-addr:
		return a
	case err := <-exited:
		b, _ := os.ReadFile(logPath)
		t.Fatalf("waqueue serve exited before serving: %v\n%s", err, tail(b, 6000))
	case <-time.After(patience):
		t.Fatalf("waqueue serve did not start serving within %v", patience)
	}
	return ""
}

// client calls the API with the admin key.
type client struct {
	t    *testing.T
	ctx  context.Context
	base string
	key  string
}

// response is an answer with the expected status.
type response struct {
	t      *testing.T
	body   []byte
	header http.Header
}

func (r response) decode(v any) {
	r.t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		r.t.Fatalf("decode %s: %v", r.body, err)
	}
}

// want calls the API and fails the test unless the status is status.
func (c *client) want(status int, method, path string, body any, headers map[string]string) response {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			c.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(c.ctx, method, c.base+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		c.t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	if res.StatusCode != status {
		c.t.Fatalf("%s %s: status %d, want %d: %s", method, path, res.StatusCode, status, b)
	}
	return response{t: c.t, body: b, header: res.Header}
}

// eventually polls cond until it holds, failing the test after patience.
func (c *client) eventually(what string, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(patience)
	for !cond() {
		if time.Now().After(deadline) || c.ctx.Err() != nil {
			c.t.Fatalf("%s: not within %v", what, patience)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (g *dispatchGate) dispatched() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.passed
}

// countTypes counts the event types of stream in st.
func countTypes(t *testing.T, ctx context.Context, st eventstore.Store, stream string) map[string]int {
	t.Helper()
	evs, err := st.ReadStream(ctx, stream, eventstore.Forwards, 0, 0)
	if err != nil && !errors.Is(err, eventstore.ErrStreamNotFound) {
		t.Fatalf("read %s: %v", stream, err)
	}
	n := map[string]int{}
	for _, e := range evs {
		n[e.Type]++
	}
	return n
}

// subsequence reports whether want appears in got in order (not necessarily adjacent).
func subsequence(got, want []string) bool {
	i := 0
	for _, g := range got {
		if i < len(want) && g == want[i] {
			i++
		}
	}
	return i == len(want)
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

func head(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

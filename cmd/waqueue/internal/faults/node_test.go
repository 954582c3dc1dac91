package faults

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/waqueue/waqueue/adapters/httpapi/apitest"
	"github.com/waqueue/waqueue/adapters/server"
	"github.com/waqueue/waqueue/adapters/simulator"
	"github.com/waqueue/waqueue/domain/invariants"
)

// logBuffer collects a node's log lines; safe for concurrent use.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// inproc is a node assembled in this process by server.New — the same composition `waqueue
// serve` runs — served on an httptest server, so the test can read the simulator's record.
type inproc struct {
	node *server.Node
	api  *api
	logs *logBuffer
	// metricsURL is the base URL of the node's metrics handler (apart from the API).
	metricsURL string
}

// startNode assembles and starts a node on db ("" for SQLite in a temporary directory) with the
// simulator routes on and pacing off. The node and its server close when t ends.
func startNode(t testing.TB, ctx context.Context, db string) *inproc {
	t.Helper()
	logs := &logBuffer{}
	o := server.Options{DataDir: t.TempDir(), DB: db, SimulatorRoutes: true, NoPacing: true,
		Logger:       slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
		BootstrapOut: io.Discard}
	node, err := server.New(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = node.Close() })
	if err := node.Start(ctx); err != nil {
		t.Fatal(err)
	}
	contract, err := apitest.LoadContract()
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(contract.Middleware(node.Handler, func(err error) { t.Errorf("%v", err) }))
	t.Cleanup(srv.Close)
	msrv := httptest.NewServer(node.MetricsHandler)
	t.Cleanup(msrv.Close)
	return &inproc{node: node, api: newAPI(srv.URL, node.AdminKey), logs: logs, metricsURL: msrv.URL}
}

// sends returns the simulator's record of connection id's sends, in order.
func (n *inproc) sends(id string) []invariants.Send {
	var out []invariants.Send
	for i, r := range n.node.Simulator.Sends() {
		if r.ConnectionID == id {
			out = append(out, invariants.Send{MessageID: r.MessageID, Order: i, Fence: r.Fence})
		}
	}
	return out
}

// latency slows connection id's simulated sends, so that faults land while messages are in flight.
func (n *inproc) latency(id string, sc simulator.Script) { n.node.Simulator.SetScript(id, sc) }

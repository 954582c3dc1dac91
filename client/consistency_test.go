package client

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/waqueue/waqueue/internal/testwait"
)

// lagging is a server whose read models reach a write's position only after `lag` reads: it
// follows the API's read-your-writes contract (docs/api.md) — a read carrying
// Waqueue-Min-Position is answered from whatever the read model holds, with
// Waqueue-Position-Reached saying whether that includes the position.
type lagging struct {
	mu    sync.Mutex
	lag   int // reads still to answer from the older view
	reads int
	held  bool // the state the write made
}

func (l *lagging) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	l.mu.Lock()
	defer l.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/v1/connections/c-1/queue/hold":
		l.held = true
		w.Header().Set("Waqueue-Position", "10/10")
		w.Header().Set(HeaderPositionReached, "false") // the card answered is older than the hold
		_, _ = w.Write([]byte(`{"id":"c-1","queue_status":"open"}`))
	case r.Method == http.MethodGet && r.URL.Path == "/v1/connections/c-1":
		l.reads++
		if r.Header.Get("Waqueue-Min-Position") == "" {
			w.Header().Set("Waqueue-Position", "1/1")
		}
		if r.Header.Get("Waqueue-Min-Position") != "10/10" || l.lag > 0 {
			l.lag--
			w.Header().Set(HeaderPositionReached, "false")
			_, _ = w.Write([]byte(`{"id":"c-1","queue_status":"open"}`))
			return
		}
		w.Header().Set(HeaderPositionReached, "true")
		_, _ = w.Write([]byte(`{"id":"c-1","queue_status":"held"}`))
	default:
		http.NotFound(w, r)
	}
}

// TestReadsAskAgainUntilTheyReachTheirWrite: a command answered with a card older than the
// command (the read models lagged past the server's bound, as on a busy or restarted server)
// and a read answered Waqueue-Position-Reached: false are asked again until the view includes
// the client's write — the CLI printed "queue held" right after `queue resume` before this
// (cmd/waqueue TestConnectionsSendBroadcastAndClear in a clean-clone CI run at load 30).
func TestReadsAskAgainUntilTheyReachTheirWrite(t *testing.T) {
	srv := &lagging{lag: 3}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	c, err := New(ts.URL, "k", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testwait.AtLeast(2*time.Minute))
	defer cancel()
	card, _, err := c.Hold(ctx, "c-1", "")
	if err != nil {
		t.Fatal(err)
	}
	if card.QueueStatus != "held" {
		t.Fatalf("hold answered queue %q: the client returned a card older than its own write", card.QueueStatus)
	}
	if srv.reads != 4 {
		t.Errorf("the card was read %d times, want 4 (3 older views, then the one with the hold)", srv.reads)
	}

	srv.lag, srv.reads = 2, 0
	got, err := c.Connection(ctx, "c-1")
	if err != nil || got.QueueStatus != "held" || srv.reads != 3 {
		t.Fatalf("read = %+v, %v after %d reads; want held after 3", got, err, srv.reads)
	}

	// Bounded: past ConsistencyWait the older view comes back (its header says so), and a
	// negative wait never asks again.
	c.ConsistencyWait = -1
	srv.lag, srv.reads = 1, 0
	if got, err := c.Connection(ctx, "c-1"); err != nil || got.QueueStatus != "open" || srv.reads != 1 {
		t.Fatalf("with ConsistencyWait < 0: %+v, %v after %d reads; want the older view after 1", got, err, srv.reads)
	}
	// A context that ends while waiting ends the call with its error.
	c.ConsistencyWait = 0
	srv.lag = 1 << 30
	short, stop := context.WithCancel(ctx)
	go func() {
		for {
			srv.mu.Lock()
			n := srv.reads
			srv.mu.Unlock()
			if n >= 3 {
				stop()
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	if _, err := c.Connection(short, "c-1"); err == nil {
		t.Fatal("a read whose context ended while waiting for the read models returned no error")
	}
}

package webhooks_test

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/webhooks"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/internal/testwait"
	"github.com/waqueue/waqueue/projections"
	"github.com/waqueue/waqueue/projections/integration"
)

// appendQueued appends n MessageQueued events of tenant-a's connection connID and returns the
// position of the last one.
func appendQueued(t *testing.T, st eventstore.Store, connID string, n int) eventstore.Position {
	return appendQueuedOf(t, st, "tenant-a", connID, n)
}

// appendQueuedOf appends n MessageQueued events of tenant's connection connID and returns the
// position of the last one.
func appendQueuedOf(t *testing.T, st eventstore.Store, tenant, connID string, n int) eventstore.Position {
	t.Helper()
	var pos eventstore.Position
	for i := 1; i <= n; i++ {
		typ, data, err := connection.Encode(connection.MessageQueued{MessageID: uuid.New(), Seq: uint64(i), Recipient: "+491701111111", QueuedAt: time.Now().UTC()})
		if err != nil {
			t.Fatal(err)
		}
		res, err := st.Append(context.Background(), connection.StreamName(connID), eventstore.Any,
			eventstore.EventData{ID: uuid.New(), Type: typ, Data: data, Metadata: eventstore.Metadata{TenantID: tenant}})
		if err != nil {
			t.Fatal(err)
		}
		pos = res.Position
	}
	return pos
}

// runOutbox runs the outbox projection, on a runner of its own, until stop; with a non-zero
// until it first waits for the outbox to reach it.
func runOutbox(t *testing.T, ctx context.Context, e env, wake func(), until eventstore.Position) (stop func()) {
	t.Helper()
	runner, stop := startOutbox(t, ctx, e, wake)
	if !until.IsZero() {
		if err := runner.WaitFor(ctx, []string{webhooks.OutboxName}, until); err != nil {
			t.Fatal(err)
		}
	}
	return stop
}

// startOutbox runs the outbox projection on a runner of its own (a node's) until stop.
func startOutbox(t *testing.T, ctx context.Context, e env, wake func()) (*projections.Runner, func()) {
	t.Helper()
	runner, err := projections.NewRunner(projections.RunnerConfig{DB: e.db, Store: e.store,
		Projections: []projections.Projection{webhooks.NewOutbox(wake)}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- runner.Run(rctx) }()
	return runner, func() { cancel(); <-done }
}

func newReceiver(t *testing.T, clk *clock, failFirst int) *receiver {
	r := &receiver{t: t, clk: clk, failFirst: failFirst, got: map[string]int{}, addr: "127.0.0.1:0"}
	r.start()
	t.Cleanup(func() { r.srv.Close() })
	return r
}

func (r *receiver) setSecret(s string) {
	r.mu.Lock()
	r.secret = s
	r.mu.Unlock()
}

func (r *receiver) received() (distinct, total int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, n := range r.got {
		distinct++
		total += n
	}
	return distinct, total
}

// TestConcurrentWorkersSendOnce: two workers on one database claim rows, so each event is sent
// once.
func TestConcurrentWorkersSendOnce(t *testing.T) {
	eachEngine(t, func(t *testing.T, e env) {
		ctx, cancel := context.WithTimeout(context.Background(), testwait.Limit)
		defer cancel()
		clk := &clock{t: time.Now().UTC()}
		svc, _ := webhooks.NewService(e.db, func() time.Time { return clk.Now().Add(-time.Hour) }, loopbackEgress)
		rcv := newReceiver(t, clk, 0)
		_, secret, err := svc.Register(ctx, "tenant-a", "http://"+rcv.addr, []string{integration.TypeMessageStatusChanged})
		if err != nil {
			t.Fatal(err)
		}
		rcv.setSecret(secret)
		const n = 40
		defer runOutbox(t, ctx, e, nil, appendQueued(t, e.store, "cw-1", n))()
		var wg sync.WaitGroup
		attempted := make([]int, 2)
		for i := range attempted {
			w, err := webhooks.NewWorker(webhooks.WorkerConfig{DB: e.db, Egress: loopbackEgress, Now: clk.Now, Batch: n})
			if err != nil {
				t.Fatal(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				k, err := w.RunOnce(ctx)
				if err != nil {
					t.Error(err)
				}
				attempted[i] = k
			}()
		}
		wg.Wait()
		distinct, total := rcv.received()
		if distinct != n || total != n || attempted[0]+attempted[1] != n {
			t.Fatalf("received %d distinct, %d total, attempted %v; want %d each, once", distinct, total, attempted, n)
		}
	})
}

// TestRunLoopAndPaging: the outbox wakes a running worker, failures are retried on the real
// clock, and the log pages with its cursor.
func TestRunLoopAndPaging(t *testing.T) {
	eachEngine(t, func(t *testing.T, e env) {
		ctx, cancel := context.WithTimeout(context.Background(), testwait.Limit)
		defer cancel()
		clk := &clock{t: time.Now().UTC()}
		svc, _ := webhooks.NewService(e.db, nil, loopbackEgress)
		rcv := newReceiver(t, clk, 3)
		id, secret, err := svc.Register(ctx, "tenant-a", "http://"+rcv.addr, []string{integration.TypeMessageStatusChanged})
		if err != nil {
			t.Fatal(err)
		}
		rcv.setSecret(secret)
		w, err := webhooks.NewWorker(webhooks.WorkerConfig{DB: e.db, Egress: loopbackEgress, Backoff: 10 * time.Millisecond, MaxBackoff: 40 * time.Millisecond,
			PollInterval: 20 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		wctx, stopWorker := context.WithCancel(ctx)
		wdone := make(chan error, 1)
		go func() { wdone <- w.Run(wctx) }()
		defer func() { stopWorker(); <-wdone }()
		defer runOutbox(t, ctx, e, w.Wake, eventstore.Start)()
		const n = webhooks.DefaultPageSize + 7
		appendQueued(t, e.store, "rl-1", n)
		for {
			if d, _ := rcv.received(); d == n {
				break
			}
			select {
			case <-ctx.Done():
				d, _ := rcv.received()
				t.Fatalf("received %d of %d", d, n)
			case <-time.After(20 * time.Millisecond):
			}
		}
		page1, cursor, err := svc.Deliveries(ctx, "tenant-a", id, "")
		if err != nil || len(page1) != webhooks.DefaultPageSize || cursor == "" {
			t.Fatalf("page 1: %d rows, cursor %q, %v", len(page1), cursor, err)
		}
		page2, cursor2, err := svc.Deliveries(ctx, "tenant-a", id, cursor)
		if err != nil || len(page2) != n-webhooks.DefaultPageSize || cursor2 != "" {
			t.Fatalf("page 2: %d rows, cursor %q, %v", len(page2), cursor2, err)
		}
		seen := map[int64]bool{}
		retried := 0
		for _, d := range append(page1, page2...) {
			if seen[d.Seq] {
				t.Errorf("delivery %d on two pages", d.Seq)
			}
			seen[d.Seq] = true
			if len(d.Attempts) > 1 {
				retried++
			}
		}
		if retried == 0 {
			t.Error("no delivery shows its failed attempts")
		}
		if _, _, err := svc.Deliveries(ctx, "tenant-a", id, "x"+strconv.Itoa(1)); err == nil {
			t.Error("malformed cursor accepted")
		}
	})
}

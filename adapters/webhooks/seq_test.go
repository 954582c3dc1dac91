package webhooks_test

import (
	"context"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/webhooks"
	"github.com/waqueue/waqueue/internal/testwait"
	"github.com/waqueue/waqueue/projections"
	"github.com/waqueue/waqueue/projections/integration"
)

// twoTenants registers a webhook of tenant-a and one of tenant-b for queued messages, an hour
// before now (so that they receive every event the test appends), at a URL nothing listens on.
// It returns a context bounded by testwait.Limit, the service and the two webhooks' ids.
func twoTenants(t *testing.T, e env) (ctx context.Context, svc *webhooks.Service, hookA, hookB string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Limit)
	t.Cleanup(cancel)
	svc, err := webhooks.NewService(e.db, func() time.Time { return time.Now().UTC().Add(-time.Hour) }, loopbackEgress)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, tenant := range []string{"tenant-a", "tenant-b"} {
		id, _, err := svc.Register(ctx, tenant, "http://127.0.0.1:9/hook", []string{integration.TypeMessageStatusChanged})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ctx, svc, ids[0], ids[1]
}

// logSeqs reads the whole delivery log of tenant's webhook id, page by page, and returns the
// deliveries' numbers in the order the pages gave them.
func logSeqs(t *testing.T, ctx context.Context, svc *webhooks.Service, tenant, id string) []int64 {
	t.Helper()
	var out []int64
	cursor := ""
	for {
		page, next, err := svc.Deliveries(ctx, tenant, id, cursor)
		if err != nil {
			t.Fatalf("Deliveries(%s, %q): %v", id, cursor, err)
		}
		for _, d := range page {
			out = append(out, d.Seq)
		}
		if next == "" {
			return out
		}
		cursor = next
	}
}

// descending returns n, n-1, …, 1.
func descending(n int) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = int64(n - i)
	}
	return out
}

// TestDeliveryNumbersArePerWebhook (G9): deliveries of tenant-a's webhook interleaved with
// tenant-b's are numbered 1..n, without a gap for tenant-b's, and the log's cursor is the
// tenant's own number too: it pages newest first, and a page read after newer deliveries
// arrived continues where the previous one ended. Before the fix, the numbers were the table's
// ids, counting both tenants' deliveries.
func TestDeliveryNumbersArePerWebhook(t *testing.T) {
	eachEngine(t, func(t *testing.T, e env) {
		ctx, svc, hookA, hookB := twoTenants(t, e)
		const n = webhooks.DefaultPageSize + 7
		var last eventstore.Position
		bs := 0
		for i := range n {
			appendQueuedOf(t, e.store, "tenant-a", "seq-a", 1)
			last = appendQueuedOf(t, e.store, "tenant-b", "seq-b", i%3+1)
			bs += i%3 + 1
		}
		runOutbox(t, ctx, e, nil, last)()

		if got := logSeqs(t, ctx, svc, "tenant-a", hookA); !slices.Equal(got, descending(n)) {
			t.Fatalf("tenant-a's deliveries numbered %v, want %d down to 1", got, n)
		}
		if got := logSeqs(t, ctx, svc, "tenant-b", hookB); !slices.Equal(got, descending(bs)) {
			t.Fatalf("tenant-b's deliveries numbered %v, want %d down to 1", got, bs)
		}

		page1, cursor, err := svc.Deliveries(ctx, "tenant-a", hookA, "")
		if err != nil || len(page1) != webhooks.DefaultPageSize || page1[0].Seq != n {
			t.Fatalf("page 1: %d deliveries from %v, %v", len(page1), page1[0].Seq, err)
		}
		if want := strconv.Itoa(n - webhooks.DefaultPageSize + 1); cursor != want {
			t.Fatalf("next cursor %q, want %q (the page's last number)", cursor, want)
		}
		// More deliveries of both tenants arrive between the two pages.
		appendQueuedOf(t, e.store, "tenant-a", "seq-a", 3)
		runOutbox(t, ctx, e, nil, appendQueuedOf(t, e.store, "tenant-b", "seq-b", 2))()
		page2, cursor2, err := svc.Deliveries(ctx, "tenant-a", hookA, cursor)
		var got []int64
		for _, d := range page2 {
			got = append(got, d.Seq)
		}
		if err != nil || cursor2 != "" || !slices.Equal(got, descending(n-webhooks.DefaultPageSize)) {
			t.Fatalf("page 2: %v, cursor %q, %v; want %d down to 1 and no cursor", got, cursor2, err, n-webhooks.DefaultPageSize)
		}
		if got := logSeqs(t, ctx, svc, "tenant-a", hookA); !slices.Equal(got, descending(n+3)) {
			t.Fatalf("tenant-a's deliveries numbered %v, want %d down to 1", got, n+3)
		}
		for _, bad := range []string{"x", "0", "-3", "1.5", "9223372036854775808"} {
			if _, _, err := svc.Deliveries(ctx, "tenant-a", hookA, bad); err == nil {
				t.Errorf("cursor %q accepted", bad)
			}
		}
	})
}

// TestTwoNodesOutboxesNumberOnce: two nodes' outbox projections on one database, running at
// once over the same events, hand out each number of a webhook once: its deliveries are
// numbered 1..n, one per event.
func TestTwoNodesOutboxesNumberOnce(t *testing.T) {
	eachEngine(t, func(t *testing.T, e env) {
		ctx, svc, hookA, hookB := twoTenants(t, e)
		r1, stop1 := startOutbox(t, ctx, e, nil)
		defer stop1()
		r2, stop2 := startOutbox(t, ctx, e, nil)
		defer stop2()
		const n = 60
		var last eventstore.Position
		for range n / 3 {
			appendQueuedOf(t, e.store, "tenant-a", "two-a", 3)
			last = appendQueuedOf(t, e.store, "tenant-b", "two-b", 1)
		}
		for _, r := range []*projections.Runner{r1, r2} {
			if err := r.WaitFor(ctx, []string{webhooks.OutboxName}, last); err != nil {
				t.Fatal(err)
			}
		}
		if got := logSeqs(t, ctx, svc, "tenant-a", hookA); !slices.Equal(got, descending(n)) {
			t.Fatalf("tenant-a's deliveries numbered %v, want %d down to 1", got, n)
		}
		if got := logSeqs(t, ctx, svc, "tenant-b", hookB); !slices.Equal(got, descending(n/3)) {
			t.Fatalf("tenant-b's deliveries numbered %v, want %d down to 1", got, n/3)
		}
	})
}

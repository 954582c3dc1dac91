package commands

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/domain/connection"
)

// replayed returns the state of connection id loaded from its whole stream, without the
// repository.
func replayed(t testing.TB, ctx context.Context, store eventstore.Store, id string) []byte {
	t.Helper()
	hist, _ := history(t, ctx, store, id)
	evs := make([]connection.Event, len(hist))
	for i, r := range hist {
		evs[i] = r.Event
	}
	c, err := connection.Load(evs...)
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func viewed(t testing.TB, ctx context.Context, repo *Repository, id string) []byte {
	t.Helper()
	var b []byte
	if err := repo.View(ctx, connection.Key(tenant, id), func(c *connection.Connection) (err error) { b, err = c.Snapshot(); return err }); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSnapshotsAndColdLoad(t *testing.T) {
	for _, s := range stores {
		t.Run(s.name, func(t *testing.T) {
			ctx := testCtx(t)
			store := s.open(t)
			h := newHandlers(t, store, RepositoryOptions{SnapshotEvery: 10}, SystemClock)
			h.registerActive(t, ctx, "c-1")
			for i := range 35 {
				if _, err := h.enqueue.Handle(as(ctx, sender), EnqueueMessage{ConnectionID: "c-1", IdempotencyKey: fmt.Sprint(i), Recipient: "+491709999999", Text: "x"}); err != nil {
					t.Fatal(err)
				}
			}
			// 37 events (revisions 0..36): snapshots when the stream reached 10, 20 and 30 events.
			snaps, err := store.ReadStream(ctx, SnapshotStream(connection.Key(tenant, "c-1")), eventstore.Forwards, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			var versions []int64
			for _, r := range snaps {
				var rec snapshotRecord
				if err := json.Unmarshal(r.Data, &rec); err != nil {
					t.Fatal(err)
				}
				versions = append(versions, rec.Version)
			}
			if fmt.Sprint(versions) != "[9 19 29]" {
				t.Fatalf("snapshot versions %v, want [9 19 29]", versions)
			}
			want := replayed(t, ctx, store, "c-1")
			for name, opts := range map[string]RepositoryOptions{
				"from snapshot": {CacheSize: -1},
				"no snapshots":  {CacheSize: -1, SnapshotEvery: -1},
				"small pages":   {CacheSize: -1, PageSize: 3},
			} {
				if got := viewed(t, ctx, must(NewRepository(store, opts)), "c-1"); !bytes.Equal(got, want) {
					t.Errorf("%s: cold state differs from a full replay:\n got %s\nwant %s", name, got, want)
				}
			}
			if got := viewed(t, ctx, h.repo, "c-1"); !bytes.Equal(got, want) {
				t.Errorf("cached state differs from a full replay:\n got %s\nwant %s", got, want)
			}
		})
	}
}

func TestUnusableSnapshotFallsBackToReplay(t *testing.T) {
	ctx := testCtx(t)
	store := openSQLite(t)
	h := newHandlers(t, store, RepositoryOptions{}, SystemClock)
	h.registerActive(t, ctx, "c-1")
	// Another schema, an undecodable state, a record of another shape: each is ignored.
	for _, body := range []string{`{"version":1,"state":{"schema":999}}`, `{"version":1,"state":null}`, `"not a record"`} {
		_, err := store.Append(ctx, SnapshotStream(connection.Key(tenant, "c-1")), eventstore.Any, eventstore.EventData{ID: uuid.New(), Type: SnapshotEventType, Data: json.RawMessage(body)})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := viewed(t, ctx, must(NewRepository(store, RepositoryOptions{CacheSize: -1})), "c-1"), replayed(t, ctx, store, "c-1"); !bytes.Equal(got, want) {
			t.Fatalf("snapshot %s: state %s, want %s", body, got, want)
		}
	}
}

func TestCacheEvictionStaysCorrect(t *testing.T) {
	ctx := testCtx(t)
	store := openSQLite(t)
	h := newHandlers(t, store, RepositoryOptions{CacheSize: 1}, SystemClock)
	ids := []string{"c-1", "c-2", "c-3"}
	for _, id := range ids {
		h.registerActive(t, ctx, id)
	}
	for i := range 12 {
		id := ids[i%3]
		r, err := h.enqueue.Handle(as(ctx, sender), EnqueueMessage{ConnectionID: id, IdempotencyKey: fmt.Sprint(i), Recipient: "+491709999999", Text: "x"})
		if err != nil {
			t.Fatal(err)
		}
		if want := uint64(i/3 + 1); r.Seq != want {
			t.Fatalf("%s message %d got seq %d, want %d", id, i, r.Seq, want)
		}
	}
	h.repo.mu.Lock()
	n := h.repo.lru.Len()
	h.repo.mu.Unlock()
	if n != 1 {
		t.Fatalf("cache holds %d connections, want 1", n)
	}
}

// BenchmarkColdLoad measures a cold load (no cache) of a stream of WAQUEUE_BENCH_EVENTS events
// (default 1,000,000) on the SQLite store: from a snapshot 100 events before the end, and by
// replaying the whole stream.
func BenchmarkColdLoad(b *testing.B) {
	n := 1_000_000
	if s := os.Getenv("WAQUEUE_BENCH_EVENTS"); s != "" {
		n = must(strconv.Atoi(s))
	}
	ctx := context.Background()
	dir := b.TempDir()
	store := must(sqliteOpen(ctx, dir))
	defer store.Close()
	const id = "c-bench"
	stream := connection.StreamName(connection.Key(tenant, id))
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := connection.New()
	batch := make([]eventstore.EventData, 0, 10_000)
	flush := func() {
		if len(batch) == 0 {
			return
		}
		exp := eventstore.NoStream
		if first := c.Version() - int64(len(batch)); first >= 0 {
			exp = eventstore.Exact(uint64(first))
		}
		if _, err := store.Append(ctx, stream, exp, batch...); err != nil {
			b.Fatal(err)
		}
		batch = batch[:0]
	}
	add := func(e connection.Event) {
		typ, data := must2(connection.Encode(e))
		rev := uint64(c.Version() + 1)
		if err := c.Apply(e); err != nil {
			b.Fatal(err)
		}
		batch = append(batch, eventstore.EventData{ID: connection.EventID(stream, rev, e), Type: typ, Data: data})
		if len(batch) == cap(batch) {
			flush()
		}
	}
	add(connection.ConnectionRegistered{ConnectionID: id, TenantID: tenant, Phone: phone, OnBan: connection.OnBanHold, RegisteredBy: "b", RegisteredAt: t0})
	add(connection.SessionPaired{Actor: "b", PairedAt: t0})
	for i := 1; i <= n-2; i++ {
		add(connection.MessageQueued{MessageID: uuid.New(), Seq: uint64(i), Recipient: "+491709999999", Text: "hello", QueuedBy: "b", QueuedAt: t0})
		if i == n-102 {
			flush()
			repo := must(NewRepository(store, RepositoryOptions{}))
			if err := repo.writeSnapshot(ctx, id, c); err != nil {
				b.Fatal(err)
			}
		}
	}
	flush()
	b.ResetTimer()
	for _, bc := range []struct {
		name string
		opts RepositoryOptions
	}{
		{"snapshot", RepositoryOptions{CacheSize: -1}},
		{"replay", RepositoryOptions{CacheSize: -1, SnapshotEvery: -1}},
	} {
		b.Run(fmt.Sprintf("%s/events=%d", bc.name, n), func(b *testing.B) {
			for b.Loop() {
				repo := must(NewRepository(store, bc.opts))
				if err := repo.View(ctx, connection.Key(tenant, id), func(got *connection.Connection) error {
					if got.Version() != c.Version() {
						return fmt.Errorf("loaded version %d, want %d", got.Version(), c.Version())
					}
					return nil
				}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func must2[A, B any](a A, bb B, err error) (A, B) {
	if err != nil {
		panic(err)
	}
	return a, bb
}

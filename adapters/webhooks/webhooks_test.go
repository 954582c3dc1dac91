package webhooks_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/eventstore/postgres"
	"github.com/waqueue/waqueue/adapters/eventstore/sqlite"
	"github.com/waqueue/waqueue/adapters/pgcluster/pgtest"
	"github.com/waqueue/waqueue/adapters/sqlitedb"
	"github.com/waqueue/waqueue/adapters/webhooks"
	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/internal/testwait"
	"github.com/waqueue/waqueue/projections"
	"github.com/waqueue/waqueue/projections/integration"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

type env struct {
	store eventstore.Store
	db    *projections.DB
}

func eachEngine(t *testing.T, body func(t *testing.T, e env)) {
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		ctx := context.Background()
		path := filepath.Join(t.TempDir(), "waqueue.db")
		st, err := sqlite.Open(ctx, path, sqlite.Options{PollInterval: 20 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		sdb, err := sqlitedb.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sdb.Close() })
		body(t, migrated(t, st, &projections.DB{SQL: sdb, Dialect: projections.SQLite}))
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		ctx := context.Background()
		url := pgtest.URL(t)
		st, err := postgres.Open(ctx, url, postgres.Options{IdlePoll: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		if err := st.Migrate(ctx); err != nil {
			t.Fatal(err)
		}
		sdb, err := sql.Open("pgx", url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sdb.Close() })
		body(t, migrated(t, st, &projections.DB{SQL: sdb, Dialect: projections.Postgres}))
	})
}

func migrated(t *testing.T, st eventstore.Store, db *projections.DB) env {
	ctx := context.Background()
	if err := projections.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	if err := webhooks.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	if err := webhooks.Migrate(ctx, db); err != nil { // idempotent at every start
		t.Fatal(err)
	}
	return env{store: st, db: db}
}

// clock is a manual clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// receiver is a real HTTP endpoint that fails its first failFirst requests with 503, verifies
// signatures, and can be taken down (its listener closed) and brought back on the same address.
type receiver struct {
	t         *testing.T
	secret    string
	clk       *clock
	mu        sync.Mutex
	failFirst int
	requests  int
	badSigs   int
	got       map[string]int // event id → times received with a good signature
	srv       *httptest.Server
	addr      string
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests++
	if err := webhooks.Verify(r.secret, req.Header.Get(webhooks.HeaderSignature), body, r.clk.Now(), 5*time.Minute); err != nil {
		r.badSigs++
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	if r.requests <= r.failFirst {
		http.Error(w, "not yet", http.StatusServiceUnavailable)
		return
	}
	var ie integration.Event
	if err := json.Unmarshal(body, &ie); err != nil || ie.ID.String() != req.Header.Get(webhooks.HeaderEventID) {
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	r.got[ie.ID.String()]++
}

func (r *receiver) start() {
	l, err := net.Listen("tcp", r.addr)
	if err != nil {
		r.t.Fatal(err)
	}
	r.srv = &httptest.Server{Listener: l, Config: &http.Server{Handler: r}}
	r.srv.Start()
	r.addr = l.Addr().String()
}

func (r *receiver) down() { r.srv.Close() }

func TestDeliveriesSurviveFailuresAndDowntime(t *testing.T) {
	eachEngine(t, func(t *testing.T, e env) {
		ctx, cancel := context.WithTimeout(context.Background(), testwait.Limit)
		defer cancel()
		clk := &clock{t: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}
		svc, err := webhooks.NewService(e.db, clk.Now, loopbackEgress)
		if err != nil {
			t.Fatal(err)
		}
		rcv := &receiver{t: t, clk: clk, failFirst: 2, got: map[string]int{}, addr: "127.0.0.1:0"}
		rcv.start()
		defer func() { rcv.srv.Close() }()
		types := []string{integration.TypeMessageStatusChanged, integration.TypeClearRequested}
		id, secret, err := svc.Register(ctx, "tenant-a", "http://"+rcv.addr+"/hook", types)
		if err != nil {
			t.Fatal(err)
		}
		rcv.setSecret(secret)
		// Another tenant's webhook on the same receiver never gets tenant-a's events (its
		// signature would not verify with tenant-a's secret either).
		if _, _, err := svc.Register(ctx, "tenant-b", "http://"+rcv.addr+"/hook", types); err != nil {
			t.Fatal(err)
		}
		if _, _, err := svc.Register(ctx, "tenant-a", "ftp://x", types); !errors.Is(err, webhooks.ErrInvalid) {
			t.Fatalf("ftp url: %v, want ErrInvalid", err)
		}
		if _, _, err := svc.Register(ctx, "tenant-a", "http://x", []string{"nope"}); !errors.Is(err, webhooks.ErrInvalid) {
			t.Fatalf("unknown type: %v, want ErrInvalid", err)
		}
		hooks, err := svc.List(ctx, "tenant-a")
		if err != nil || len(hooks) != 1 || hooks[0].ID != id || len(hooks[0].EventTypes) != 2 {
			t.Fatalf("List = %+v, %v", hooks, err)
		}

		// Domain events, one second after registration (the store stamps RecordedAt with the
		// wall clock, which is after the fixed registration time).
		repo, err := commands.NewRepository(e.store, commands.RepositoryOptions{})
		if err != nil {
			t.Fatal(err)
		}
		op := commands.WithPrincipal(ctx, auth.Principal{TenantID: "tenant-a", ID: "op", Role: auth.RoleOperator})
		now := func() time.Time { return clk.Now() }
		reg, _ := commands.NewRegisterConnectionHandler(repo, now)
		enq, _ := commands.NewEnqueueMessageHandler(repo, now)
		clr, _ := commands.NewRequestClearHandler(repo, now)
		if _, err := reg.Handle(op, commands.RegisterConnection{ConnectionID: "wh-c1", Phone: "+491701234567"}); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"k1", "k2", "k3"} {
			if _, err := enq.Handle(op, commands.EnqueueMessage{ConnectionID: "wh-c1", IdempotencyKey: k, Recipient: "+491701111111", Text: k}); err != nil {
				t.Fatal(err)
			}
		}
		res, err := clr.Handle(op, commands.RequestClear{ConnectionID: "wh-c1", IdempotencyKey: "c", Reason: "ban"})
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		recorded, err := e.store.ReadAll(ctx, eventstore.Start, 0, integration.Filter())
		if err != nil {
			t.Fatal(err)
		}
		for _, re := range recorded {
			ie, ok, err := integration.Translate(re)
			if err != nil {
				t.Fatal(err)
			}
			if ok && (ie.Type == types[0] || ie.Type == types[1]) {
				want = append(want, ie.ID.String())
			}
		}
		if len(want) != 4 {
			t.Fatalf("want 4 integration events (3 queued, 1 clear requested), got %d", len(want))
		}

		// The outbox projection, run by the real runner.
		runOutbox(t, ctx, e, nil, res.Position)() // the outbox filled, then stopped

		newWorker := func() *webhooks.Worker {
			w, err := webhooks.NewWorker(webhooks.WorkerConfig{DB: e.db, Egress: loopbackEgress, Now: clk.Now, Backoff: time.Second, MaxBackoff: 8 * time.Second, Timeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			return w
		}
		w := newWorker()
		// Round 1: the first two requests get 503, the other two arrive.
		if n, err := w.RunOnce(ctx); err != nil || n != 4 {
			t.Fatalf("round 1: %d, %v; want 4 attempts", n, err)
		}
		// Nothing is due before the backoff passes.
		if n, err := w.RunOnce(ctx); err != nil || n != 0 {
			t.Fatalf("before backoff: %d, %v; want 0", n, err)
		}
		// The receiver goes down for three rounds; the worker restarts in between.
		rcv.down()
		for i := 0; i < 3; i++ {
			clk.Add(10 * time.Second)
			if n, err := w.RunOnce(ctx); err != nil || n != 2 {
				t.Fatalf("down round %d: %d, %v; want 2 attempts", i, n, err)
			}
			w = newWorker()
		}
		rcv.start()
		clk.Add(10 * time.Second)
		if n, err := w.RunOnce(ctx); err != nil || n != 2 {
			t.Fatalf("back up: %d, %v; want 2", n, err)
		}
		clk.Add(time.Hour)
		if n, err := w.RunOnce(ctx); err != nil || n != 0 {
			t.Fatalf("after delivery: %d, %v; want nothing left", n, err)
		}

		rcv.mu.Lock()
		got := make([]string, 0, len(rcv.got))
		for id, times := range rcv.got {
			got = append(got, id)
			if times != 1 {
				t.Errorf("event %s received %d times", id, times)
			}
		}
		bad := rcv.badSigs
		rcv.mu.Unlock()
		sort.Strings(got)
		sort.Strings(want)
		if len(got) != len(want) {
			t.Fatalf("received %v; want %v", got, want)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("received %v; want %v", got, want)
			}
		}
		if bad != 0 {
			t.Errorf("%d requests with a bad signature (tenant-b's hook must have received nothing)", bad)
		}

		// The log: two deliveries took 1 (503) + 3 (down) + 1 (ok) attempts, two took 1.
		ds, next, err := svc.Deliveries(ctx, "tenant-a", id, "")
		if err != nil || next != "" || len(ds) != 4 {
			t.Fatalf("Deliveries = %d rows, next %q, %v", len(ds), next, err)
		}
		var five, one int
		for _, d := range ds {
			if d.DeliveredAt.IsZero() || !d.NextAttemptAt.IsZero() || d.LastStatus != http.StatusOK {
				t.Errorf("delivery %d not delivered: %+v", d.Seq, d)
			}
			switch len(d.Attempts) {
			case 5:
				five++
				if d.Attempts[0].StatusCode != http.StatusServiceUnavailable || d.Attempts[1].StatusCode != 0 || d.Attempts[1].Error == "" {
					t.Errorf("attempt log of %d: %+v", d.Seq, d.Attempts)
				}
				if !d.Attempts[1].At.After(d.Attempts[0].At) {
					t.Errorf("attempt times not increasing: %+v", d.Attempts)
				}
			case 1:
				one++
			default:
				t.Errorf("delivery %d: %d attempts: %+v", d.Seq, len(d.Attempts), d.Attempts)
			}
		}
		if five != 2 || one != 2 {
			t.Errorf("attempt counts: %d with 5, %d with 1; want 2 and 2", five, one)
		}
		if _, _, err := svc.Deliveries(ctx, "tenant-b", id, ""); !errors.Is(err, webhooks.ErrNotFound) {
			t.Errorf("other tenant reads the log: %v", err)
		}
		if err := svc.Delete(ctx, "tenant-b", id); !errors.Is(err, webhooks.ErrNotFound) {
			t.Errorf("other tenant deletes: %v", err)
		}
		if err := svc.Delete(ctx, "tenant-a", id); err != nil {
			t.Fatal(err)
		}
		if hooks, _ := svc.List(ctx, "tenant-a"); len(hooks) != 0 {
			t.Errorf("deleted webhook still listed: %+v", hooks)
		}
	})
}

func TestSignature(t *testing.T) {
	at := time.Unix(1_700_000_000, 0)
	body := []byte(`{"id":"x"}`)
	h := webhooks.Sign("whsec_1", at, body)
	if err := webhooks.Verify("whsec_1", h, body, at.Add(time.Minute), 5*time.Minute); err != nil {
		t.Fatalf("valid signature refused: %v", err)
	}
	for name, c := range map[string]struct {
		secret, header string
		body           []byte
		now            time.Time
	}{
		"tampered body": {"whsec_1", h, []byte(`{"id":"y"}`), at},
		"wrong secret":  {"whsec_2", h, body, at},
		"too old":       {"whsec_1", h, body, at.Add(time.Hour)},
		"malformed":     {"whsec_1", "v1=zz", body, at},
	} {
		if err := webhooks.Verify(c.secret, c.header, c.body, c.now, 5*time.Minute); !errors.Is(err, webhooks.ErrBadSignature) {
			t.Errorf("%s: %v, want ErrBadSignature", name, err)
		}
	}
}

// TestOutboxBroadcastChunk checks that a broadcast recorded as BroadcastQueued chunks gives a
// subscribed webhook one queued message.status_changed per message (the ids TranslateAll
// gives), and a tenant without such a webhook none.
func TestOutboxBroadcastChunk(t *testing.T) {
	eachEngine(t, func(t *testing.T, e env) {
		ctx, cancel := context.WithTimeout(context.Background(), testwait.Limit)
		defer cancel()
		clk := &clock{t: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}
		svc, err := webhooks.NewService(e.db, clk.Now, loopbackEgress)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := svc.Register(ctx, "tenant-a", "http://127.0.0.1:9/hook", []string{integration.TypeMessageStatusChanged}); err != nil {
			t.Fatal(err)
		}
		if _, _, err := svc.Register(ctx, "tenant-b", "http://127.0.0.1:9/hook", []string{integration.TypeClearRequested}); err != nil {
			t.Fatal(err)
		}
		repo, err := commands.NewRepository(e.store, commands.RepositoryOptions{})
		if err != nil {
			t.Fatal(err)
		}
		now := func() time.Time { return clk.Now() }
		reg, _ := commands.NewRegisterConnectionHandler(repo, now)
		bc, _ := commands.NewStartBroadcastHandler(repo, now)
		var last eventstore.Position
		for _, tenant := range []string{"tenant-a", "tenant-b"} {
			op := commands.WithPrincipal(ctx, auth.Principal{TenantID: tenant, ID: "op", Role: auth.RoleAdmin})
			if _, err := reg.Handle(op, commands.RegisterConnection{ConnectionID: "wh-b", Phone: "+491701234567"}); err != nil {
				t.Fatal(err)
			}
			res, err := bc.Handle(op, commands.StartBroadcast{ConnectionID: "wh-b", IdempotencyKey: "b",
				Recipients: []string{"+491701111111", "+491702222222", "+491703333333"}, Text: "offer"})
			if err != nil {
				t.Fatal(err)
			}
			last = res.Position
		}
		var want []string
		recorded, err := e.store.ReadAll(ctx, eventstore.Start, 0, integration.Filter())
		if err != nil {
			t.Fatal(err)
		}
		for _, re := range recorded {
			ies, err := integration.TranslateAll(re)
			if err != nil {
				t.Fatal(err)
			}
			for _, ie := range ies {
				if ie.TenantID == "tenant-a" && ie.Type == integration.TypeMessageStatusChanged {
					want = append(want, ie.ID.String())
				}
			}
		}
		if len(want) != 3 {
			t.Fatalf("%d queued integration events of tenant-a, want 3", len(want))
		}
		runOutbox(t, ctx, e, nil, last)() // the outbox filled, then stopped
		rows, err := e.db.QueryContext(ctx, `SELECT tenant_id, event_id FROM webhook_deliveries ORDER BY event_id`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var got []string
		for rows.Next() {
			var tenant, id string
			if err := rows.Scan(&tenant, &id); err != nil {
				t.Fatal(err)
			}
			if tenant != "tenant-a" {
				t.Fatalf("a delivery for %s, which has no webhook for queued messages", tenant)
			}
			got = append(got, id)
		}
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("deliveries %v, want %v", got, want)
		}
	})
}

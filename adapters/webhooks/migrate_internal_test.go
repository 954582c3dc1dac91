package webhooks

import (
	"context"
	"database/sql"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/waqueue/waqueue/adapters/pgcluster/pgtest"
	"github.com/waqueue/waqueue/adapters/sqlitedb"
	"github.com/waqueue/waqueue/projections"
)

// TestMigrationTrimsStoredErrors: delivery logs written before issue 11.7 held raw error texts
// (addresses, ports, status lines); migration 2 rewrites them to their class.
func TestMigrationTrimsStoredErrors(t *testing.T) {
	for _, engine := range []string{"sqlite", "postgres"} {
		t.Run(engine, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db := openAt(t, engine, 1)
			for _, q := range []string{
				`INSERT INTO webhooks (id, tenant_id, url, event_types, secret, created_at_us) VALUES ('h', 't', 'http://x', 'a', 's', 1)`,
				`INSERT INTO webhook_deliveries (id, webhook_id, tenant_id, event_id, event_type, payload, created_at_us, next_attempt_at_us, last_status, last_error)
				 VALUES (1, 'h', 't', 'e1', 'a', '{}', 1, 1, 0, 'dial tcp 10.0.0.7:5432: connect: connection refused'),
				        (2, 'h', 't', 'e2', 'a', '{}', 1, 1, 503, 'webhooks: receiver answered 503 Service Unavailable')`,
				`INSERT INTO webhook_attempts (delivery_id, attempt, at_us, status_code, error) VALUES
				 (1, 1, 1, 0, 'dial tcp 10.0.0.7:5432: connect: connection refused'), (2, 1, 1, 503, 'webhooks: receiver answered 503 Service Unavailable'),
				 (2, 2, 2, 302, 'webhooks: receiver answered 302 Found'), (2, 3, 3, 0, 'timeout'), (2, 4, 4, 204, '')`,
			} {
				if _, err := db.ExecContext(ctx, q); err != nil {
					t.Fatal(err)
				}
			}
			if err := Migrate(ctx, db); err != nil {
				t.Fatal(err)
			}
			want := map[[2]int]string{{1, 1}: "request_failed", {2, 1}: "http_status", {2, 2}: "redirect_not_followed", {2, 3}: "timeout", {2, 4}: ""}
			rows, err := db.QueryContext(ctx, `SELECT delivery_id, attempt, error FROM webhook_attempts`)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			for rows.Next() {
				var d, a int
				var e string
				if err := rows.Scan(&d, &a, &e); err != nil {
					t.Fatal(err)
				}
				if want[[2]int{d, a}] != e {
					t.Errorf("attempt %d/%d error %q, want %q", d, a, e, want[[2]int{d, a}])
				}
			}
			var last1, last2 string
			if err := db.QueryRowContext(ctx, `SELECT (SELECT last_error FROM webhook_deliveries WHERE id = 1), (SELECT last_error FROM webhook_deliveries WHERE id = 2)`).Scan(&last1, &last2); err != nil {
				t.Fatal(err)
			}
			if last1 != "request_failed" || last2 != "http_status" {
				t.Errorf("last errors %q, %q; want request_failed, http_status", last1, last2)
			}
		})
	}
}

// openAt opens a new read-model database of engine ("sqlite" or "postgres") with the webhook
// schema at version.
func openAt(t *testing.T, engine string, version int64) *projections.DB {
	t.Helper()
	var db *projections.DB
	if engine == "sqlite" {
		sdb, err := sqlitedb.Open(filepath.Join(t.TempDir(), "w.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sdb.Close() })
		db = &projections.DB{SQL: sdb, Dialect: projections.SQLite}
	} else {
		pdb, err := sql.Open("pgx", pgtest.URL(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = pdb.Close() })
		db = &projections.DB{SQL: pdb, Dialect: projections.Postgres}
	}
	p, err := migrationProvider(db)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.UpTo(context.Background(), version); err != nil {
		t.Fatal(err)
	}
	return db
}

// TestMigrationNumbersDeliveriesPerWebhook: deliveries made under migration 2 carry only the
// table's id, counted across every tenant; migration 3 numbers them within their webhook in id
// order and sets each webhook's counter, so the outbox continues each webhook's numbers without
// gaps, and a number cannot be handed out twice.
func TestMigrationNumbersDeliveriesPerWebhook(t *testing.T) {
	for _, engine := range []string{"sqlite", "postgres"} {
		t.Run(engine, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db := openAt(t, engine, 2)
			// In id order, tenant a's webhook ha got e1, e3, e4, e7; tenant b's hb e2, e5, e6;
			// hc (tenant a's too) none.
			if _, err := db.ExecContext(ctx, `INSERT INTO webhooks (id, tenant_id, url, event_types, secret, created_at_us) VALUES
				 ('ha', 'a', 'http://x', 't', 's', 1), ('hb', 'b', 'http://x', 't', 's', 1), ('hc', 'a', 'http://x', 't', 's', 1)`); err != nil {
				t.Fatal(err)
			}
			hookOf := []string{1: "ha", 2: "hb", 3: "ha", 4: "ha", 5: "hb", 6: "hb", 7: "ha"}
			for i := 1; i < len(hookOf); i++ {
				if _, err := db.ExecContext(ctx, `INSERT INTO webhook_deliveries (webhook_id, tenant_id, event_id, event_type, payload, created_at_us, next_attempt_at_us)
					VALUES ($1, $2, $3, 't', '{}', $4, 0)`, hookOf[i], hookOf[i][1:], "e"+strconv.Itoa(i), i); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := db.ExecContext(ctx, `INSERT INTO webhook_attempts (delivery_id, attempt, at_us, status_code, error)
				SELECT id, 1, 5, 503, 'http_status' FROM webhook_deliveries WHERE event_id = 'e4'`); err != nil {
				t.Fatal(err)
			}
			if err := Migrate(ctx, db); err != nil {
				t.Fatal(err)
			}
			wantSeq := map[string]int64{"e1": 1, "e3": 2, "e4": 3, "e7": 4, "e2": 1, "e5": 2, "e6": 3}
			rows, err := db.QueryContext(ctx, `SELECT event_id, seq FROM webhook_deliveries`)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			for rows.Next() {
				var ev string
				var seq int64
				if err := rows.Scan(&ev, &seq); err != nil {
					t.Fatal(err)
				}
				if seq != wantSeq[ev] {
					t.Errorf("delivery of %s numbered %d, want %d", ev, seq, wantSeq[ev])
				}
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			wantLast := map[string]int64{"ha": 4, "hb": 3, "hc": 0}
			for h, want := range wantLast {
				if got := lastDeliverySeq(t, db, h); got != want {
					t.Errorf("webhook %s: last_delivery_seq %d, want %d", h, got, want)
				}
			}

			// The log shows the numbers, and the attempts still belong to their delivery.
			svc, err := NewService(db, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			ds, _, err := svc.Deliveries(ctx, "a", "ha", "")
			if err != nil {
				t.Fatal(err)
			}
			var got []int64
			for _, d := range ds {
				got = append(got, d.Seq)
			}
			if !slices.Equal(got, []int64{4, 3, 2, 1}) || len(ds[1].Attempts) != 1 || ds[1].Attempts[0].StatusCode != 503 {
				t.Fatalf("log of ha: seqs %v, %+v", got, ds)
			}

			// The outbox continues: a new event is 5; e1, already there, takes no number.
			tx, err := db.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			b := &outboxBatch{tx: tx, rows: map[string][]outboxRow{"ha": {
				{tenant: "a", eventID: "e1", eventType: "t", payload: "{}", createdUS: 1},
				{tenant: "a", eventID: "e8", eventType: "t", payload: "{}", createdUS: 8},
			}}}
			if wrote, err := b.insert(ctx); err != nil || !wrote {
				t.Fatalf("insert: wrote %v, %v", wrote, err)
			}
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
			var seq8 int64
			if err := db.QueryRowContext(ctx, `SELECT seq FROM webhook_deliveries WHERE event_id = 'e8'`).Scan(&seq8); err != nil || seq8 != 5 {
				t.Fatalf("new delivery numbered %d (%v), want 5", seq8, err)
			}
			if got := lastDeliverySeq(t, db, "ha"); got != 5 {
				t.Fatalf("last_delivery_seq of ha %d after one new delivery, want 5", got)
			}

			// A number handed out twice is refused.
			if _, err := db.ExecContext(ctx, `INSERT INTO webhook_deliveries (webhook_id, seq, tenant_id, event_id, event_type, payload, created_at_us, next_attempt_at_us)
				VALUES ('ha', 5, 'a', 'e9', 't', '{}', 9, 0)`); err == nil {
				t.Fatal("a second delivery numbered 5 was accepted")
			}

			// Down to 2 (before rolling the binary back) keeps the deliveries.
			p, err := migrationProvider(db)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := p.DownTo(ctx, 2); err != nil {
				t.Fatal(err)
			}
			var left int
			if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM webhook_deliveries`).Scan(&left); err != nil || left != 8 {
				t.Fatalf("%d deliveries after migrating down (%v), want 8", left, err)
			}
		})
	}
}

func lastDeliverySeq(t *testing.T, db *projections.DB, webhookID string) int64 {
	t.Helper()
	var n int64
	if err := db.QueryRowContext(context.Background(), `SELECT last_delivery_seq FROM webhooks WHERE id = $1`, webhookID).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

package webhooks

import (
	"context"
	"database/sql"
	"path/filepath"
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
			if _, err := p.UpTo(ctx, 1); err != nil {
				t.Fatal(err)
			}
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

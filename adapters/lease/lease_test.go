package lease_test

import (
	"context"
	"database/sql"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/waqueue/waqueue/adapters/lease"
	"github.com/waqueue/waqueue/adapters/pgcluster/pgtest"
	"github.com/waqueue/waqueue/projections/dispatcher"
	"github.com/waqueue/waqueue/projections/dispatcher/leasetest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestPostgres(t *testing.T) {
	leasetest.Run(t, func(t *testing.T) leasetest.Opener {
		db, err := sql.Open("pgx", pgtest.URL(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return func(node string, ttl time.Duration) dispatcher.Leases {
			l, err := lease.NewPostgres(context.Background(), db, node, ttl)
			if err != nil {
				t.Fatal(err)
			}
			return l
		}
	}, true)
}

// Package lease holds the adapters of dispatcher.Leases, the per-connection leases that let
// several nodes share the dispatch: Postgres, a lease table in the PostgreSQL database that holds
// the read models, and NATS, a JetStream key-value bucket for EventStoreDB + NATS deployments.
// Both pass the leasetest conformance suite. (The single-node implementation,
// dispatcher.SingleNode, needs no engine.)
package lease

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/waqueue/waqueue/projections/dispatcher"
)

// DefaultTTL is the lease TTL of the PostgreSQL leases when none is given.
const DefaultTTL = 6 * time.Second

// Schema creates the lease table. Keyed by tenant and connection; epoch only grows.
const Schema = `CREATE TABLE IF NOT EXISTS dispatch_leases (
	tenant_id     TEXT NOT NULL,
	connection_id TEXT NOT NULL,
	owner         TEXT NOT NULL,
	epoch         BIGINT NOT NULL,
	expires_at    TIMESTAMPTZ NOT NULL,
	PRIMARY KEY (tenant_id, connection_id)
);
CREATE INDEX IF NOT EXISTS dispatch_leases_owner ON dispatch_leases (owner, expires_at);
CREATE TABLE IF NOT EXISTS dispatch_nodes (
	node       TEXT PRIMARY KEY,
	expires_at TIMESTAMPTZ NOT NULL
);`

// Postgres implements dispatcher.Leases with one row per connection in dispatch_leases. Every
// method is one SQL statement; expiry is judged by the database's clock (now()), so the nodes'
// clocks do not matter.
type Postgres struct {
	db   *sql.DB
	node string
	ttl  time.Duration
}

var (
	_ dispatcher.Leases     = (*Postgres)(nil)
	_ dispatcher.Membership = (*Postgres)(nil)
)

// NewPostgres returns the leases of node on db (a database/sql handle with the pgx driver),
// creating the table if needed. ttl 0 means DefaultTTL.
func NewPostgres(ctx context.Context, db *sql.DB, node string, ttl time.Duration) (*Postgres, error) {
	if db == nil || node == "" {
		return nil, errors.New("lease: NewPostgres needs a database and a node id")
	}
	if ttl < 0 {
		return nil, fmt.Errorf("lease: negative TTL %s", ttl)
	}
	if ttl == 0 {
		ttl = DefaultTTL
	}
	if _, err := db.ExecContext(ctx, Schema); err != nil {
		return nil, fmt.Errorf("lease: create table: %w", err)
	}
	return &Postgres{db: db, node: node, ttl: ttl}, nil
}

// Node returns the node id.
func (p *Postgres) Node() string { return p.node }

// TTL returns the lease TTL.
func (p *Postgres) TTL() time.Duration { return p.ttl }

// Claim grants, in one statement, each key nobody holds, whose lease expired, or that this node
// holds; the epoch grows by one on a change of owner.
func (p *Postgres) Claim(ctx context.Context, keys []dispatcher.LeaseKey) ([]dispatcher.Lease, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	tenants, conns := split(keys)
	rows, err := p.db.QueryContext(ctx, `
INSERT INTO dispatch_leases AS l (tenant_id, connection_id, owner, epoch, expires_at)
SELECT DISTINCT k.t, k.c, $1::text, 1, now() + $2::bigint * interval '1 microsecond'
  FROM unnest($3::text[], $4::text[]) AS k(t, c)
 ORDER BY k.t, k.c
ON CONFLICT (tenant_id, connection_id) DO UPDATE
   SET owner = EXCLUDED.owner,
       epoch = CASE WHEN l.owner = EXCLUDED.owner THEN l.epoch ELSE l.epoch + 1 END,
       expires_at = EXCLUDED.expires_at
 WHERE l.owner = EXCLUDED.owner OR l.expires_at <= now()
RETURNING tenant_id, connection_id, epoch`, p.node, p.ttl.Microseconds(), tenants, conns)
	if err != nil {
		return nil, fmt.Errorf("lease: claim %d: %w", len(keys), err)
	}
	return scan(rows)
}

// Renew extends every unexpired lease of this node and writes its heartbeat, in one statement. Rows are locked in key
// order, as Claim locks them, so a renewal and another node's claim cannot deadlock.
func (p *Postgres) Renew(ctx context.Context) ([]dispatcher.Lease, error) {
	rows, err := p.db.QueryContext(ctx, `
WITH heartbeat AS (
	INSERT INTO dispatch_nodes (node, expires_at) VALUES ($1, now() + $2::bigint * interval '1 microsecond')
	ON CONFLICT (node) DO UPDATE SET expires_at = EXCLUDED.expires_at
)
UPDATE dispatch_leases l SET expires_at = now() + $2::bigint * interval '1 microsecond'
  FROM (SELECT tenant_id, connection_id FROM dispatch_leases
         WHERE owner = $1 AND expires_at > now()
         ORDER BY tenant_id, connection_id FOR UPDATE) s
 WHERE l.tenant_id = s.tenant_id AND l.connection_id = s.connection_id AND l.owner = $1 AND l.expires_at > now()
RETURNING l.tenant_id, l.connection_id, l.epoch`, p.node, p.ttl.Microseconds())
	if err != nil {
		return nil, fmt.Errorf("lease: renew: %w", err)
	}
	return scan(rows)
}

// Release expires this node's leases of keys (all of them for nil, and then its heartbeat is
// removed) now; owner and epoch stay, so the next owner's claim raises the epoch.
func (p *Postgres) Release(ctx context.Context, keys []dispatcher.LeaseKey) error {
	var err error
	if keys == nil {
		_, err = p.db.ExecContext(ctx, `
WITH gone AS (DELETE FROM dispatch_nodes WHERE node = $1)
UPDATE dispatch_leases SET expires_at = now() WHERE owner = $1 AND expires_at > now()`, p.node)
	} else {
		tenants, conns := split(keys)
		_, err = p.db.ExecContext(ctx, `
UPDATE dispatch_leases l SET expires_at = now()
  FROM unnest($2::text[], $3::text[]) AS k(t, c)
 WHERE l.tenant_id = k.t AND l.connection_id = k.c AND l.owner = $1 AND l.expires_at > now()`, p.node, tenants, conns)
	}
	if err != nil {
		return fmt.Errorf("lease: release: %w", err)
	}
	return nil
}

// LiveNodes returns the nodes whose heartbeat has not expired, sorted.
func (p *Postgres) LiveNodes(ctx context.Context) ([]string, error) {
	rows, err := p.db.QueryContext(ctx, `SELECT node FROM dispatch_nodes WHERE expires_at > now() ORDER BY node`)
	if err != nil {
		return nil, fmt.Errorf("lease: live nodes: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, fmt.Errorf("lease: live nodes: %w", err)
		}
		out = append(out, n)
	}
	return out, rows.Err()
}

func split(keys []dispatcher.LeaseKey) (tenants, conns []string) {
	tenants, conns = make([]string, len(keys)), make([]string, len(keys))
	for i, k := range keys {
		tenants[i], conns[i] = k.Tenant, k.ConnectionID
	}
	return tenants, conns
}

func scan(rows *sql.Rows) ([]dispatcher.Lease, error) {
	defer rows.Close()
	var out []dispatcher.Lease
	for rows.Next() {
		var l dispatcher.Lease
		var epoch int64
		if err := rows.Scan(&l.Tenant, &l.ConnectionID, &epoch); err != nil {
			return nil, fmt.Errorf("lease: scan: %w", err)
		}
		l.Epoch = uint64(epoch)
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("lease: rows: %w", err)
	}
	return out, nil
}

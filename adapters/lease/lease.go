// Package lease holds the adapters of dispatcher.Leases, the per-connection leases that let
// several nodes share the dispatch: Postgres, lease tables in the PostgreSQL database that holds
// the read models, and NATS, a JetStream key-value bucket for EventStoreDB + NATS deployments.
// Both pass the leasetest conformance suite. (The single-node implementation,
// dispatcher.SingleNode, needs no engine.)
//
// Both tie a connection's lease to its owner node's session (as etcd attaches keys to a lease,
// or Chubby's sessions): a node renews one session, whatever the number of connections it
// holds; a connection's lease records its owner node, the owner's session and the fencing epoch,
// and is valid exactly while that session is. A session that expired is ended for good the first
// time another node looks at it to take a lease over (a write that races with the owner's
// renewal, so that exactly one of them wins): its leases all become free at once, and the lapsed
// node starts a new session that holds nothing until it claims again.
package lease

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/waqueue/waqueue/projections/dispatcher"
)

// DefaultTTL is the lease TTL of the PostgreSQL leases when none is given.
const DefaultTTL = 6 * time.Second

// Schema creates the lease tables, and migrates those of the per-connection expiry (before node
// sessions): dispatch_leases loses expires_at (its rows keep owner and epoch, so epochs keep
// growing; they start unheld) and the old dispatch_nodes (one heartbeat row per node) is dropped.
// A node of the old version then fails its lease statements instead of dispatching beside the
// new ones: upgrade every dispatching node together (operations.md).
//
// dispatch_nodes has one row per node session; a session is live while it is not ended and its
// expiry (set by its node's renewals on the database's clock) is in the future. ended only turns
// true: a session ended is never renewed again.
const Schema = `SELECT pg_advisory_xact_lock(7283001);
DO $$
BEGIN
	IF EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()
	            AND table_name = 'dispatch_leases' AND column_name = 'expires_at') THEN
		ALTER TABLE dispatch_leases ADD COLUMN IF NOT EXISTS session BIGINT;
		ALTER TABLE dispatch_leases DROP COLUMN expires_at;
	END IF;
	IF EXISTS (SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema()
	            AND table_name = 'dispatch_nodes')
	   AND NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()
	            AND table_name = 'dispatch_nodes' AND column_name = 'session') THEN
		DROP TABLE dispatch_nodes;
	END IF;
END $$;
CREATE TABLE IF NOT EXISTS dispatch_leases (
	tenant_id     TEXT NOT NULL,
	connection_id TEXT NOT NULL,
	owner         TEXT NOT NULL,
	session       BIGINT,
	epoch         BIGINT NOT NULL,
	PRIMARY KEY (tenant_id, connection_id)
);
CREATE INDEX IF NOT EXISTS dispatch_leases_session ON dispatch_leases (session);
CREATE SEQUENCE IF NOT EXISTS dispatch_sessions_seq;
CREATE TABLE IF NOT EXISTS dispatch_nodes (
	session    BIGINT PRIMARY KEY DEFAULT nextval('dispatch_sessions_seq'),
	node       TEXT NOT NULL,
	started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
	expires_at TIMESTAMPTZ NOT NULL,
	ended      BOOLEAN NOT NULL DEFAULT false
);
CREATE INDEX IF NOT EXISTS dispatch_nodes_node ON dispatch_nodes (node);`

// Postgres implements dispatcher.Leases and dispatcher.Membership with node sessions in
// dispatch_nodes and one row per connection in dispatch_leases (owner, session, epoch). Expiry
// is judged by the database's clock (now()), so the nodes' clocks do not matter.
//
// Costs: Renew is two statements whatever the number of leases (the session's heartbeat, one
// row, and a read of the session's leases by an index); Claim is two or three (the heartbeat,
// then one statement that ends the expired sessions of the keys' owners and takes the keys);
// Release is one. A connection's row is written only when it changes owner or is released.
type Postgres struct {
	db   *sql.DB
	node string
	ttl  time.Duration

	mu      sync.Mutex // serializes heartbeats, so a node starts one session at a time
	session int64      // the current session; 0 before the first heartbeat or after Release(nil)
}

var (
	_ dispatcher.Leases     = (*Postgres)(nil)
	_ dispatcher.Membership = (*Postgres)(nil)
)

// NewPostgres returns the leases of node on db (a database/sql handle with the pgx driver),
// creating (or migrating) the tables if needed. ttl 0 means DefaultTTL.
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
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("lease: create tables: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, Schema); err != nil {
		return nil, fmt.Errorf("lease: create tables: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("lease: create tables: %w", err)
	}
	return &Postgres{db: db, node: node, ttl: ttl}, nil
}

// Node returns the node id.
func (p *Postgres) Node() string { return p.node }

// TTL returns the lease TTL.
func (p *Postgres) TTL() time.Duration { return p.ttl }

// Session returns this node's current session id (0 when it has none): for tests and logs.
func (p *Postgres) Session() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.session
}

// heartbeat extends this node's session by one TTL from the database's now, or starts a new one
// when it has none or it lapsed (expired or ended: its leases are lost, the new session holds
// none). fresh reports a new session.
func (p *Postgres) heartbeat(ctx context.Context) (session int64, fresh bool, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ttl := p.ttl.Microseconds()
	if p.session != 0 {
		err := p.db.QueryRowContext(ctx, `
UPDATE dispatch_nodes SET expires_at = now() + $2::bigint * interval '1 microsecond'
 WHERE session = $1 AND NOT ended AND expires_at > now()
RETURNING session`, p.session, ttl).Scan(&session)
		switch {
		case err == nil:
			return session, false, nil
		case !errors.Is(err, sql.ErrNoRows):
			return 0, false, fmt.Errorf("lease: heartbeat: %w", err)
		}
	}
	// A new session; the lapsed one is ended for good (it expired: nobody may renew it), and
	// sessions (of any node: a restarted process is a new node) that expired over an hour ago
	// and hold no lease row are forgotten.
	err = p.db.QueryRowContext(ctx, `
WITH old AS (
	UPDATE dispatch_nodes SET ended = true WHERE session = $3 AND NOT ended
), gc AS (
	DELETE FROM dispatch_nodes n
	 WHERE n.expires_at < now() - interval '1 hour'
	   AND NOT EXISTS (SELECT 1 FROM dispatch_leases l WHERE l.session = n.session)
)
INSERT INTO dispatch_nodes (node, expires_at) VALUES ($1, now() + $2::bigint * interval '1 microsecond')
RETURNING session`, p.node, ttl, p.session).Scan(&session)
	if err != nil {
		return 0, false, fmt.Errorf("lease: start a session: %w", err)
	}
	p.session = session
	return session, true, nil
}

// Claim grants each key nobody holds, whose owner's session is over (expired or ended), or that
// this node's session holds; the epoch grows by one on a change of owner node. It first renews
// this node's session (so a granted lease is valid one TTL from the claim's start), then, in one
// statement, ends the expired sessions of the keys' owners — locking each such session row, in
// order, so that its node's concurrent renewal either wins (the session lives on and its leases
// are refused here) or finds it ended — and takes the free keys.
func (p *Postgres) Claim(ctx context.Context, keys []dispatcher.LeaseKey) ([]dispatcher.Lease, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	session, _, err := p.heartbeat(ctx)
	if err != nil {
		return nil, err
	}
	tenants, conns := split(keys)
	rows, err := p.db.QueryContext(ctx, `
WITH k AS (
	SELECT DISTINCT t, c FROM unnest($3::text[], $4::text[]) AS k(t, c)
), ended AS (
	UPDATE dispatch_nodes n SET ended = true
	  FROM (SELECT session FROM dispatch_nodes
	         WHERE session IN (SELECT l.session FROM dispatch_leases l JOIN k ON l.tenant_id = k.t AND l.connection_id = k.c
	                            WHERE l.session IS NOT NULL AND l.session <> $2)
	           AND NOT ended AND expires_at <= now()
	         ORDER BY session FOR UPDATE) s
	 WHERE n.session = s.session AND NOT n.ended AND n.expires_at <= now()
	RETURNING n.session
)
INSERT INTO dispatch_leases AS l (tenant_id, connection_id, owner, session, epoch)
SELECT k.t, k.c, $1::text, $2::bigint, 1 FROM k
 WHERE EXISTS (SELECT 1 FROM dispatch_nodes WHERE session = $2 AND NOT ended)
 ORDER BY k.t, k.c
ON CONFLICT (tenant_id, connection_id) DO UPDATE
   SET owner = EXCLUDED.owner, session = EXCLUDED.session,
       epoch = CASE WHEN l.owner = EXCLUDED.owner THEN l.epoch ELSE l.epoch + 1 END
 WHERE l.session IS NULL OR l.session = EXCLUDED.session
    OR l.session IN (SELECT session FROM ended)
    OR EXISTS (SELECT 1 FROM dispatch_nodes n WHERE n.session = l.session AND n.ended)
RETURNING tenant_id, connection_id, epoch`, p.node, session, tenants, conns)
	if err != nil {
		return nil, fmt.Errorf("lease: claim %d: %w", len(keys), err)
	}
	return scan(rows)
}

// Renew extends this node's session and returns the leases it holds (a read by the session's
// index: no lease row is written). When the session lapsed, a new one is started and nothing is
// returned: the leases are lost (other nodes may hold them now) until claimed again.
func (p *Postgres) Renew(ctx context.Context) ([]dispatcher.Lease, error) {
	session, fresh, err := p.heartbeat(ctx)
	if err != nil {
		return nil, err
	}
	if fresh {
		return nil, nil
	}
	rows, err := p.db.QueryContext(ctx, `SELECT tenant_id, connection_id, epoch FROM dispatch_leases WHERE session = $1`, session)
	if err != nil {
		return nil, fmt.Errorf("lease: renew: %w", err)
	}
	return scan(rows)
}

// Release frees this node's leases of keys now, keeping owner and epoch, so the next owner's
// claim raises the epoch. For nil it ends the node's session instead (every session of the node
// id): every lease of it is free at once, and the node leaves the live set.
func (p *Postgres) Release(ctx context.Context, keys []dispatcher.LeaseKey) error {
	p.mu.Lock()
	session := p.session
	if keys == nil {
		p.session = 0
	}
	p.mu.Unlock()
	var err error
	if keys == nil {
		// Every session of the node id, whichever handle started it.
		_, err = p.db.ExecContext(ctx, `UPDATE dispatch_nodes SET ended = true, expires_at = least(expires_at, now()) WHERE node = $1 AND NOT ended`, p.node)
	} else {
		if session == 0 {
			return nil
		}
		tenants, conns := split(keys)
		_, err = p.db.ExecContext(ctx, `
UPDATE dispatch_leases l SET session = NULL
  FROM unnest($2::text[], $3::text[]) AS k(t, c)
 WHERE l.tenant_id = k.t AND l.connection_id = k.c AND l.session = $1`, session, tenants, conns)
	}
	if err != nil {
		return fmt.Errorf("lease: release: %w", err)
	}
	return nil
}

// LiveNodes returns the nodes with a live session, sorted.
func (p *Postgres) LiveNodes(ctx context.Context) ([]string, error) {
	rows, err := p.db.QueryContext(ctx, `SELECT DISTINCT node FROM dispatch_nodes WHERE NOT ended AND expires_at > now() ORDER BY node`)
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

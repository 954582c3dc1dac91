package apikeys

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/waqueue/waqueue/projections"
)

// Shared key lookups.
//
// Every authenticated request reads its key's row (no cache: a revocation, role change or
// suspension that returned is in effect for every instance at once, see the package doc). Under
// load that was one read-model query, and on PostgreSQL one transaction, per request — as many
// as the requests' own work. Concurrent lookups now share one query: a lookup is queued; while
// fewer than maxLookupQueries queries run, it starts one at once (an idle node looks up alone,
// with the latency of a lone query); otherwise it waits for the next query, which takes every
// lookup queued by then (at most maxLookupBatch distinct keys) and reads their rows together.
//
// Nothing is reused across requests: each lookup's answer comes from a query sent after the
// lookup was queued, so after the request arrived, and so after any change that had returned
// by then. Each request gets the row of its own key hash, or none.

const (
	// maxLookupQueries bounds the key queries running at once. One: a lookup arriving while a
	// query runs waits for it and goes with everything queued meanwhile, so under load there
	// is about one query per query time, each carrying every key asked since (with two, twice
	// the queries for the same requests: bench api, 64 clients, 0.16–0.25 key queries per
	// request against 0.13–0.16 with one, for a wait of at most one lone query more).
	maxLookupQueries = 1
	// maxLookupBatch bounds the distinct key hashes of one query.
	maxLookupBatch = 256
)

// keyRow is what a key lookup reads: the key and its tenant's state.
type keyRow struct {
	keyID, tenantID, role string
	revoked               int64
	status                string
	perSecond             float64
	burst                 int64
}

// pendingLookup is a queued lookup of one key hash.
type pendingLookup struct {
	hash  string
	done  chan struct{}
	row   keyRow
	found bool
	err   error
}

// lookups is the queue of key lookups and the count of queries running.
type lookups struct {
	mu      sync.Mutex
	queue   []*pendingLookup
	running int
	oneKey  *sql.Stmt // SQLite: the one-key query, prepared (oneKeyStmt)
	// queries and shared count the queries run and those that served more than one lookup
	// (tests).
	queries, shared int
}

// lookupKey returns the row of the key whose hash is hash (found false when there is none),
// read by a query that starts after the call.
func (k *Keys) lookupKey(ctx context.Context, hash string) (keyRow, bool, error) {
	p := &pendingLookup{hash: hash, done: make(chan struct{})}
	l := &k.lookups
	l.mu.Lock()
	l.queue = append(l.queue, p)
	lead := l.running < maxLookupQueries
	if lead {
		l.running++
	}
	l.mu.Unlock()
	if lead {
		go k.runLookups()
	}
	select {
	case <-p.done:
		return p.row, p.found, p.err
	case <-ctx.Done():
		// The query may still answer it; nobody reads that answer.
		return keyRow{}, false, ctx.Err()
	}
}

// runLookups runs queries until the queue is empty.
func (k *Keys) runLookups() {
	l := &k.lookups
	for {
		l.mu.Lock()
		batch := l.take()
		if len(batch) == 0 {
			l.running--
			l.mu.Unlock()
			return
		}
		l.queries++
		if len(batch) > 1 {
			l.shared++
		}
		l.mu.Unlock()
		k.runLookup(batch)
	}
}

// take removes from the queue the lookups of the next query: all of them, unless they name
// more than maxLookupBatch distinct hashes (the rest stay queued, in order). Called with l.mu.
func (l *lookups) take() []*pendingLookup {
	hashes := make(map[string]bool)
	var batch []*pendingLookup
	rest := l.queue[:0]
	for _, p := range l.queue {
		if !hashes[p.hash] && len(hashes) == maxLookupBatch {
			rest = append(rest, p)
			continue
		}
		hashes[p.hash] = true
		batch = append(batch, p)
	}
	clear(l.queue[len(rest):])
	l.queue = rest
	return batch
}

// runLookup reads the rows of the batch's hashes in one query and answers every lookup.
func (k *Keys) runLookup(batch []*pendingLookup) {
	defer func() {
		for _, p := range batch {
			close(p.done)
		}
	}()
	seen := make(map[string]bool, len(batch))
	hashes := make([]string, 0, len(batch))
	for _, p := range batch {
		if !seen[p.hash] {
			seen[p.hash] = true
			hashes = append(hashes, p.hash)
		}
	}
	if k.beforeLookup != nil {
		k.beforeLookup()
	}
	// Not the context of any one request: the query answers all of them.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rows, err := k.readKeyRows(ctx, hashes)
	for _, p := range batch {
		if err != nil {
			p.err = fmt.Errorf("apikeys: authenticate: %w", err)
			continue
		}
		p.row, p.found = rows[p.hash]
	}
}

// sqlKeyRows reads the keys of a list of hashes with their tenants' state: on PostgreSQL the
// list is one array parameter (one statement text, which pgx prepares once); on SQLite, which
// has no arrays, it is one placeholder per hash (most queries ask for one key; a json_each
// list cost twice the lone lookup there).
const sqlKeyRows = `SELECT k.key_hash, k.key_id, k.tenant_id, k.role, k.revoked_at_us, COALESCE(t.status, ''),
		COALESCE(t.rate_per_second, 0), COALESCE(t.rate_burst, 0)
		FROM api_keys k LEFT JOIN tenants t ON t.tenant_id = k.tenant_id WHERE `

// oneKeyStmt returns, on SQLite, the one-key query prepared (parsing it cost the pure-Go
// SQLite more than running it); nil on PostgreSQL, whose driver prepares each statement text
// once by itself, and when preparing failed (the query then runs unprepared and tells why).
func (k *Keys) oneKeyStmt(ctx context.Context) *sql.Stmt {
	if k.db.Dialect != projections.SQLite {
		return nil
	}
	l := &k.lookups
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.oneKey == nil {
		st, err := k.db.SQL.PrepareContext(ctx, k.db.Rebind(sqlKeyRows+`k.key_hash IN ($1)`))
		if err != nil {
			return nil
		}
		l.oneKey = st
	}
	return l.oneKey
}

// readKeyRows returns the rows of hashes by hash (a hash without a key has none).
func (k *Keys) readKeyRows(ctx context.Context, hashes []string) (map[string]keyRow, error) {
	q, args := sqlKeyRows+`k.key_hash = ANY($1::text[])`, []any{hashes}
	if k.db.Dialect == projections.SQLite {
		var b strings.Builder
		b.WriteString(sqlKeyRows + `k.key_hash IN (`)
		args = make([]any, len(hashes))
		for i, h := range hashes {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("$" + strconv.Itoa(i+1))
			args[i] = h
		}
		b.WriteString(")")
		q = b.String()
	}
	var rows *sql.Rows
	var err error
	if st := k.oneKeyStmt(ctx); st != nil && len(hashes) == 1 {
		rows, err = st.QueryContext(ctx, args...)
	} else {
		rows, err = k.db.QueryContext(ctx, q, args...)
	}
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make(map[string]keyRow, len(hashes))
	for rows.Next() {
		var hash string
		var r keyRow
		if err := rows.Scan(&hash, &r.keyID, &r.tenantID, &r.role, &r.revoked, &r.status, &r.perSecond, &r.burst); err != nil {
			return nil, err
		}
		out[hash] = r
	}
	return out, rows.Err()
}

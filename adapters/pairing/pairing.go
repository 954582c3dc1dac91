// Package pairing runs QR pairings for the API and the console and shares their latest code
// with every node through the read-model database.
//
// A QR pairing runs on the node that started it (transport.Transport.PairQR: a WhatsApp client
// of that process yields a new code about every 20 s until one is scanned). That node writes
// the latest code and the pairing's state to the table qr_pairings, keyed by tenant id and
// connection id, and keeps the row fresh while the pairing runs; when the pairing ends
// (success, timeout, failure) the row is marked ended. Any node answers a read from its memory
// when the pairing runs there, else from the row — a row counts only while it says running,
// was updated within Config.Fresh and its pairing has not passed its deadline, so a dead
// node's row is ignored soon. A start on any node joins the pairing running anywhere and starts
// a new one only when none runs: the claim of the row is one atomic upsert, so two nodes never
// both start one.
package pairing

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/waqueue/waqueue/adapters/transport"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/projections"
)

// ErrNoCode is returned by Start when the pairing ended (or is still waiting) without a QR code.
var ErrNoCode = errors.New("pairing: no QR code: the pairing ended without one")

// ErrNoTransport is returned by Start on a node without a transport when no pairing runs.
var ErrNoTransport = errors.New("pairing: this node has no WhatsApp transport")

// ErrClosed is Start's error once Close was called.
var ErrClosed = errors.New("pairing: the manager is closed")

// QR is the latest code of a QR pairing.
type QR struct {
	Code string
	// Running is false once the pairing ended (the code is the last it showed).
	Running bool
	// NodeID is the node running the pairing.
	NodeID string
	// UpdatedAt is when the code (or the pairing's liveness) was last recorded.
	UpdatedAt time.Time
	// ExpiresAt is the pairing's deadline (its start plus Config.Timeout).
	ExpiresAt time.Time
}

// Config configures a Manager.
type Config struct {
	// DB is the read-model database every node shares (Migrate creates the table).
	DB *projections.DB
	// Transport starts pairings on this node; nil: the node only joins pairings running elsewhere.
	Transport transport.Transport
	// NodeID names this node in the rows. Default: a random id.
	NodeID string
	// Timeout bounds a pairing. Default 3 minutes.
	Timeout time.Duration
	// Fresh is how recently a row must have been updated to count; the running node touches it
	// every Fresh/3. Default 30 s (WhatsApp rotates codes about every 20 s).
	Fresh time.Duration
	// FirstCodeWait bounds how long Start waits for a pairing's first code. Default 30 s.
	FirstCodeWait time.Duration
	// Now is the wall clock (the pairing's timers are real). Default time.Now.
	Now func() time.Time
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Manager starts, follows and shares QR pairings. It is safe for concurrent use.
type Manager struct {
	cfg Config

	mu   sync.Mutex
	runs map[string]*run // connection.Key -> the pairing running on this node
	// claiming holds a channel per connection.Key whose row a Start is claiming, closed when
	// the claim is done: the claim runs outside mu, so a slow claim (a row lock, a busy
	// database) holds up only the Starts of its own connection, not every tenant's.
	claiming map[string]chan struct{}
	closed   bool // Close was called: no pairing starts
	wg       sync.WaitGroup
}

// run is a pairing running on this node.
type run struct {
	id      string // fences this run's writes to the row
	expires time.Time
	cancel  context.CancelFunc
	first   chan struct{} // closed (closeFirst) at the first code or at the end
	once    sync.Once

	mu      sync.Mutex
	code    string
	updated time.Time
	running bool
	err     error
}

func (r *run) closeFirst() { r.once.Do(func() { close(r.first) }) }

func (r *run) snapshot(node string) (QR, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return QR{Code: r.code, Running: r.running, NodeID: node, UpdatedAt: r.updated, ExpiresAt: r.expires}, r.err
}

// New returns a Manager.
func New(cfg Config) (*Manager, error) {
	if cfg.DB == nil {
		return nil, errors.New("pairing: Config.DB is nil")
	}
	if cfg.NodeID == "" {
		cfg.NodeID = "node-" + rand.Text()[:10]
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 3 * time.Minute
	}
	if cfg.Fresh <= 0 {
		cfg.Fresh = 30 * time.Second
	}
	if cfg.FirstCodeWait <= 0 {
		cfg.FirstCodeWait = 30 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Manager{cfg: cfg, runs: map[string]*run{}, claiming: map[string]chan struct{}{}}, nil
}

// NodeID returns the node's id as the rows name it.
func (m *Manager) NodeID() string { return m.cfg.NodeID }

// Migrate creates the table qr_pairings if it does not exist, in the read-model database
// (PostgreSQL or SQLite) every node shares. It is safe to run at every start.
func Migrate(ctx context.Context, db *projections.DB) error {
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS qr_pairings (
			tenant_id TEXT NOT NULL,
			connection_id TEXT NOT NULL,
			run_id TEXT NOT NULL,
			node_id TEXT NOT NULL,
			state TEXT NOT NULL,
			code TEXT NOT NULL DEFAULT '',
			started_at_us BIGINT NOT NULL,
			updated_at_us BIGINT NOT NULL,
			expires_at_us BIGINT NOT NULL,
			PRIMARY KEY (tenant_id, connection_id))`); err != nil {
		return fmt.Errorf("pairing: migrate: %w", err)
	}
	return nil
}

// Row states.
const (
	stateRunning = "running"
	stateEnded   = "ended"
)

// Start joins the QR pairing of connection connID of tenantID running on any node, or starts
// one on this node when none runs, and returns its latest code once it has one (waiting up to
// Config.FirstCodeWait or until ctx is done). The pairing outlives ctx, bounded by
// Config.Timeout. Errors: the transport's (transport.ErrAlreadyPaired, …) when the pairing
// could not start; ErrNoCode when it ended, or still waits, without a code. The caller
// authorizes the connection.
func (m *Manager) Start(ctx context.Context, tenantID, connID string) (QR, error) {
	key := connection.Key(tenantID, connID)
	m.mu.Lock()
	for {
		if m.closed {
			m.mu.Unlock()
			return QR{}, ErrClosed
		}
		if r, ok := m.runs[key]; ok {
			m.mu.Unlock()
			return m.wait(ctx, r)
		}
		busy, ok := m.claiming[key]
		if !ok {
			break
		}
		// Another Start of this connection is claiming its row: take what it gets.
		m.mu.Unlock()
		select {
		case <-busy:
		case <-ctx.Done():
			return QR{}, ctx.Err()
		}
		m.mu.Lock()
	}
	if m.cfg.Transport == nil {
		m.mu.Unlock()
		return m.join(ctx, tenantID, connID)
	}
	done := make(chan struct{})
	m.claiming[key] = done
	m.mu.Unlock()
	now := m.cfg.Now()
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.cfg.Timeout)
	r := &run{id: rand.Text(), expires: now.Add(m.cfg.Timeout), cancel: cancel, first: make(chan struct{}), running: true, updated: now}
	claimed, err := m.claim(ctx, tenantID, connID, r, now)
	m.mu.Lock()
	delete(m.claiming, key)
	close(done)
	if claimed && m.closed {
		// Closed during the claim: Close has cancelled the runs it saw, not this one.
		m.mu.Unlock()
		cancel()
		m.end(tenantID, connID, key, r, ErrClosed)
		return QR{}, ErrClosed
	}
	if err != nil || !claimed {
		m.mu.Unlock()
		cancel()
		if err != nil {
			return QR{}, err
		}
		return m.join(ctx, tenantID, connID)
	}
	m.runs[key] = r
	m.mu.Unlock()

	codes, err := m.cfg.Transport.PairQR(pctx, key)
	if err != nil {
		cancel()
		m.end(tenantID, connID, key, r, err)
		return QR{}, err
	}
	m.wg.Add(1)
	go m.follow(pctx, tenantID, connID, key, r, codes)
	return m.wait(ctx, r)
}

// claim makes r the pairing of the connection in the table unless another live one holds it
// (running, fresh, not past its deadline, of another node: a row of this node without a run in
// memory is a dead one's). The upsert is atomic on both engines.
func (m *Manager) claim(ctx context.Context, tenantID, connID string, r *run, now time.Time) (bool, error) {
	res, err := m.cfg.DB.ExecContext(ctx, `INSERT INTO qr_pairings
		(tenant_id, connection_id, run_id, node_id, state, code, started_at_us, updated_at_us, expires_at_us)
		VALUES ($1, $2, $3, $4, 'running', '', $5, $5, $6)
		ON CONFLICT (tenant_id, connection_id) DO UPDATE SET run_id = excluded.run_id, node_id = excluded.node_id,
			state = 'running', code = '', started_at_us = excluded.started_at_us,
			updated_at_us = excluded.updated_at_us, expires_at_us = excluded.expires_at_us
		WHERE qr_pairings.state <> 'running' OR qr_pairings.updated_at_us < $7
			OR qr_pairings.expires_at_us <= $5 OR qr_pairings.node_id = $4`,
		tenantID, connID, r.id, m.cfg.NodeID, now.UnixMicro(), r.expires.UnixMicro(), now.Add(-m.cfg.Fresh).UnixMicro())
	if err != nil {
		return false, fmt.Errorf("pairing: claim %s/%s: %w", tenantID, connID, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("pairing: claim %s/%s: %w", tenantID, connID, err)
	}
	return n == 1, nil
}

// follow records r's codes until the pairing ends, touching the row every Fresh/3.
func (m *Manager) follow(ctx context.Context, tenantID, connID, key string, r *run, codes <-chan string) {
	defer m.wg.Done()
	tick := time.NewTicker(m.cfg.Fresh / 3)
	defer tick.Stop()
	for {
		select {
		case code, ok := <-codes:
			if !ok {
				m.end(tenantID, connID, key, r, nil)
				return
			}
			now := m.cfg.Now()
			r.mu.Lock()
			r.code, r.updated = code, now
			r.mu.Unlock()
			m.write(ctx, `UPDATE qr_pairings SET code = $1, updated_at_us = $2
				WHERE tenant_id = $3 AND connection_id = $4 AND run_id = $5`, code, now.UnixMicro(), tenantID, connID, r.id)
			r.closeFirst()
		case <-ctx.Done():
			// Timed out or closed: the transport closes codes soon; nobody needs them any more.
			m.end(tenantID, connID, key, r, nil)
			go func() {
				for range codes {
				}
			}()
			return
		case <-tick.C:
			now := m.cfg.Now()
			r.mu.Lock()
			r.updated = now
			r.mu.Unlock()
			m.write(ctx, `UPDATE qr_pairings SET updated_at_us = $1
				WHERE tenant_id = $2 AND connection_id = $3 AND run_id = $4`, now.UnixMicro(), tenantID, connID, r.id)
		}
	}
}

// write runs a row update of a running pairing; a failure is logged (the row goes stale and
// other nodes stop showing the pairing, which goes on here).
func (m *Manager) write(ctx context.Context, q string, args ...any) {
	if _, err := m.cfg.DB.ExecContext(ctx, q, args...); err != nil && ctx.Err() == nil {
		m.cfg.Logger.Warn("pairing: recording the QR pairing failed", "err", err)
	}
}

// end marks r ended (with err when it could not start), in its row first and then in memory,
// and forgets it: once this node answers that the pairing ended, every node does.
func (m *Manager) end(tenantID, connID, key string, r *run, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, werr := m.cfg.DB.ExecContext(ctx, `UPDATE qr_pairings SET state = 'ended', code = '', updated_at_us = $1
		WHERE tenant_id = $2 AND connection_id = $3 AND run_id = $4`,
		m.cfg.Now().UnixMicro(), tenantID, connID, r.id); werr != nil {
		m.cfg.Logger.Warn("pairing: recording the end of a QR pairing failed", "err", werr)
	}
	r.mu.Lock()
	r.running, r.err, r.updated = false, err, m.cfg.Now()
	r.mu.Unlock()
	r.closeFirst()
	m.mu.Lock()
	if m.runs[key] == r {
		delete(m.runs, key)
	}
	m.mu.Unlock()
}

// wait returns r's latest code once it has one, it ended, ctx is done or FirstCodeWait passed.
func (m *Manager) wait(ctx context.Context, r *run) (QR, error) {
	t := time.NewTimer(m.cfg.FirstCodeWait)
	defer t.Stop()
	select {
	case <-r.first:
	case <-t.C:
	case <-ctx.Done():
		return QR{}, ctx.Err()
	}
	q, err := r.snapshot(m.cfg.NodeID)
	if q.Code == "" {
		if err != nil {
			return q, err
		}
		return q, ErrNoCode
	}
	return q, nil
}

// joinPoll is how often join looks at the row of a pairing running elsewhere for its first code.
const joinPoll = 100 * time.Millisecond

// join returns the latest code of the pairing running on another node, waiting for its first
// code as wait does.
func (m *Manager) join(ctx context.Context, tenantID, connID string) (QR, error) {
	deadline := time.NewTimer(m.cfg.FirstCodeWait)
	defer deadline.Stop()
	for {
		q, live, err := m.row(ctx, tenantID, connID)
		switch {
		case err != nil:
			return QR{}, err
		case live && q.Code != "":
			return q, nil
		case !live && m.cfg.Transport == nil:
			return QR{}, ErrNoTransport
		case !live:
			return QR{}, ErrNoCode
		}
		select {
		case <-time.After(joinPoll):
		case <-deadline.C:
			return QR{}, ErrNoCode
		case <-ctx.Done():
			return QR{}, ctx.Err()
		}
	}
}

// row reads the connection's row; live says it is a pairing running on another node now.
func (m *Manager) row(ctx context.Context, tenantID, connID string) (q QR, live bool, _ error) {
	var state string
	var updated, expires int64
	err := m.cfg.DB.QueryRowContext(ctx, `SELECT code, node_id, state, updated_at_us, expires_at_us FROM qr_pairings
		WHERE tenant_id = $1 AND connection_id = $2`, tenantID, connID).Scan(&q.Code, &q.NodeID, &state, &updated, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return QR{}, false, nil
	}
	if err != nil {
		return QR{}, false, fmt.Errorf("pairing: read %s/%s: %w", tenantID, connID, err)
	}
	now := m.cfg.Now()
	q.UpdatedAt, q.ExpiresAt = time.UnixMicro(updated).UTC(), time.UnixMicro(expires).UTC()
	q.Running = state == stateRunning
	live = q.Running && !q.UpdatedAt.Before(now.Add(-m.cfg.Fresh)) && q.ExpiresAt.After(now) && q.NodeID != m.cfg.NodeID
	return q, live, nil
}

// Latest returns the latest code of the QR pairing of connection connID of tenantID running on
// any node: from memory when it runs here, else from its row. ok is false when no pairing runs
// (or it has no code yet); an ended pairing's code is never answered. The caller authorizes the
// connection.
func (m *Manager) Latest(ctx context.Context, tenantID, connID string) (_ QR, ok bool, _ error) {
	m.mu.Lock()
	r := m.runs[connection.Key(tenantID, connID)]
	m.mu.Unlock()
	if r != nil {
		q, _ := r.snapshot(m.cfg.NodeID)
		return q, q.Running && q.Code != "", nil
	}
	q, live, err := m.row(ctx, tenantID, connID)
	if err != nil || !live || q.Code == "" {
		return QR{}, false, err
	}
	return q, true, nil
}

// Close ends the pairings running on this node (their rows are marked ended) and waits for
// them. A Start after it, or one whose claim it interrupts, fails with ErrClosed.
func (m *Manager) Close() {
	m.mu.Lock()
	m.closed = true
	for _, r := range m.runs {
		r.cancel()
	}
	m.mu.Unlock()
	m.wg.Wait()
}

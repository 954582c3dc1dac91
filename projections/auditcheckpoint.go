package projections

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/domain/auditchain"
)

func insertCheckpoint(ctx context.Context, tx *Tx, e eventstore.RecordedEvent) error {
	var c auditchain.Checkpoint
	if err := json.Unmarshal(e.Data, &c); err != nil {
		return fmt.Errorf("audit checkpoint %s: %w", e.ID, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO audit_checkpoints (tenant_id, seq, head_hash, at_us, key_id, public_key, signature)
VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (tenant_id, seq) DO NOTHING`,
		c.TenantID, int64(c.Seq), c.Head, us(c.At), c.KeyID, c.PublicKey, c.Signature); err != nil {
		return fmt.Errorf("audit checkpoint %s: %w", e.ID, err)
	}
	return nil
}

// CheckpointPage is a page of a tenant's audit checkpoints, newest first.
type CheckpointPage struct {
	Checkpoints []auditchain.Checkpoint
	// NextCursor continues with older checkpoints; "" when this page is the last.
	NextCursor string
}

// Checkpoints returns tenant's signed checkpoints, newest first: limit of them (default 100,
// at most 1000) before cursor ("" for the newest).
func (a *Audit) Checkpoints(ctx context.Context, db *DB, tenant, cursor string, limit int) (CheckpointPage, error) {
	if limit <= 0 {
		limit = 100
	}
	limit = min(limit, 1000)
	before := int64(1<<62 - 1)
	if cursor != "" {
		v, err := strconv.ParseInt(cursor, 10, 64)
		if err != nil || v <= 0 {
			return CheckpointPage{}, fmt.Errorf("%w: %q", ErrBadCursor, cursor)
		}
		before = v
	}
	rows, err := db.QueryContext(ctx, `SELECT tenant_id, seq, head_hash, at_us, key_id, public_key, signature FROM audit_checkpoints
WHERE tenant_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3`, tenant, before, limit+1)
	if err != nil {
		return CheckpointPage{}, fmt.Errorf("projections: audit checkpoints of %q: %w", tenant, err)
	}
	defer rows.Close()
	var page CheckpointPage
	for rows.Next() {
		var c auditchain.Checkpoint
		var seq, at int64
		if err := rows.Scan(&c.TenantID, &seq, &c.Head, &at, &c.KeyID, &c.PublicKey, &c.Signature); err != nil {
			return CheckpointPage{}, fmt.Errorf("projections: audit checkpoints of %q: %w", tenant, err)
		}
		c.Seq, c.At = uint64(seq), fromUS(at)
		page.Checkpoints = append(page.Checkpoints, c)
	}
	if err := rows.Err(); err != nil {
		return CheckpointPage{}, fmt.Errorf("projections: audit checkpoints of %q: %w", tenant, err)
	}
	if len(page.Checkpoints) > limit {
		page.Checkpoints = page.Checkpoints[:limit]
		page.NextCursor = strconv.FormatUint(page.Checkpoints[limit-1].Seq, 10)
	}
	return page, nil
}

// VerifySince verifies tenant's whole chain as stored, anchored at since (a checkpoint signed by
// one of keys, typically kept outside the database) and at every stored checkpoint from since
// on. It is what `waqueue audit verify --since` does through the API, run on the database
// directly. The error is for a since that does not verify or a failed read; a tampered chain is
// a Report with OK false.
func (a *Audit) VerifySince(ctx context.Context, db *DB, tenant string, since auditchain.Checkpoint, keys ...ed25519.PublicKey) (auditchain.Report, error) {
	if since.TenantID != tenant {
		return auditchain.Report{}, auditchain.ErrCheckpointTenant
	}
	v, err := auditchain.NewVerifier(since, keys...)
	if err != nil {
		return auditchain.Report{}, err
	}
	for cursor := ""; ; {
		page, err := a.Checkpoints(ctx, db, tenant, cursor, 1000)
		if err != nil {
			return auditchain.Report{}, err
		}
		for _, c := range page.Checkpoints {
			v.Stored(c)
		}
		if cursor = page.NextCursor; cursor == "" {
			break
		}
	}
	rows, err := db.QueryContext(ctx, `SELECT `+auditColumns+` FROM audit_entries WHERE tenant_id = $1 ORDER BY seq`, tenant)
	if err != nil {
		return auditchain.Report{}, fmt.Errorf("projections: verify audit of %q: %w", tenant, err)
	}
	defer rows.Close()
	for rows.Next() {
		en, err := scanAudit(rows)
		if err != nil {
			return auditchain.Report{}, fmt.Errorf("projections: verify audit of %q: %w", tenant, err)
		}
		v.Entry(en.Link(), en.Hash)
	}
	if err := rows.Err(); err != nil {
		return auditchain.Report{}, fmt.Errorf("projections: verify audit of %q: %w", tenant, err)
	}
	return v.Finish(), nil
}

// Defaults of AuditCheckpointerConfig.
const (
	DefaultCheckpointEvery    = 100
	DefaultCheckpointInterval = 5 * time.Minute
)

// AuditCheckpointerConfig configures an AuditCheckpointer.
type AuditCheckpointerConfig struct {
	// DB holds the audit projection's tables. Required.
	DB *DB
	// Store receives the checkpoint events. Required.
	Store eventstore.Store
	// Key signs the checkpoints. Required. It must never be stored in DB or Store.
	Key ed25519.PrivateKey
	// Every is how many new entries of a tenant make a checkpoint due. Default
	// DefaultCheckpointEvery.
	Every int
	// Interval is the longest an entry waits for a checkpoint: one is due when the oldest entry
	// not yet covered was recorded Interval ago. Default DefaultCheckpointInterval.
	Interval time.Duration
	// PollInterval is how often Run checks the time trigger (wake-ups check the count). Default
	// Interval/10, between 1s and 30s.
	PollInterval time.Duration
	// Now is the clock of the time trigger and of the checkpoints. Default time.Now.
	Now func() time.Time
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// AuditCheckpointer signs checkpoints of every tenant's audit chain (G8): when Every entries are
// not covered yet, or the oldest of them was recorded Interval ago, it checks the entries since
// the last checkpoint (their links and hashes, from the last signed head), signs the head with
// Key and appends an AuditCheckpointSigned event to the tenant's stream auditcp-<tenant> at the
// expected revision. Several nodes may run one: the loser of a race gets a revision conflict and
// signs nothing. A chain that does not verify is not signed (the error is logged and returned).
type AuditCheckpointer struct {
	cfg   AuditCheckpointerConfig
	wake  chan struct{}
	mu    sync.Mutex
	known map[string]uint64 // tenant → seq of its last checkpoint seen
}

// NewAuditCheckpointer validates cfg.
func NewAuditCheckpointer(cfg AuditCheckpointerConfig) (*AuditCheckpointer, error) {
	var errs []error
	if cfg.DB == nil {
		errs = append(errs, errors.New("projections: AuditCheckpointerConfig.DB is nil"))
	}
	if cfg.Store == nil {
		errs = append(errs, errors.New("projections: AuditCheckpointerConfig.Store is nil"))
	}
	if len(cfg.Key) != ed25519.PrivateKeySize {
		errs = append(errs, errors.New("projections: AuditCheckpointerConfig.Key is not an Ed25519 private key"))
	}
	if cfg.Every < 0 || cfg.Interval < 0 {
		errs = append(errs, errors.New("projections: AuditCheckpointerConfig.Every and Interval must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Every == 0 {
		cfg.Every = DefaultCheckpointEvery
	}
	if cfg.Interval == 0 {
		cfg.Interval = DefaultCheckpointInterval
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = min(max(cfg.Interval/10, time.Second), 30*time.Second)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &AuditCheckpointer{cfg: cfg, wake: make(chan struct{}, 1), known: map[string]uint64{}}, nil
}

// PublicKey is the key verifiers need (print it at start; keep it outside the database).
func (c *AuditCheckpointer) PublicKey() ed25519.PublicKey {
	return c.cfg.Key.Public().(ed25519.PublicKey)
}

// Wake asks Run to check the count trigger now (Audit.OnCommit). It never blocks.
func (c *AuditCheckpointer) Wake() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Run calls Tick at every wake-up and every PollInterval until ctx is done. Errors are logged
// and retried at the next tick.
func (c *AuditCheckpointer) Run(ctx context.Context) error {
	t := time.NewTicker(c.cfg.PollInterval)
	defer t.Stop()
	for {
		if _, err := c.Tick(ctx); err != nil && ctx.Err() == nil {
			c.cfg.Logger.Error("audit checkpoint failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-c.wake:
		case <-t.C:
		}
	}
}

// checkpointNS is the namespace of checkpoint event ids: one id per (tenant, seq), so a retried
// append is recognised.
var checkpointNS = uuid.MustParse("3f6a1d0e-8c2b-4b7e-9d41-5a0c7e2f9b13")

// Tick signs and appends the checkpoints due now (by the configured clock) and returns them.
// Tenants whose chain does not verify are skipped; their errors are joined in the error.
func (c *AuditCheckpointer) Tick(ctx context.Context) ([]auditchain.Checkpoint, error) {
	heads, err := c.heads(ctx)
	if err != nil {
		return nil, err
	}
	var out []auditchain.Checkpoint
	var errs []error
	for tenant, head := range heads {
		c.mu.Lock()
		known := c.known[tenant]
		c.mu.Unlock()
		if head <= known {
			continue
		}
		cp, ok, err := c.checkpoint(ctx, tenant, head)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if ok {
			out = append(out, cp)
		}
	}
	return out, errors.Join(errs...)
}

func (c *AuditCheckpointer) heads(ctx context.Context) (map[string]uint64, error) {
	rows, err := c.cfg.DB.QueryContext(ctx, `SELECT tenant_id, MAX(seq) FROM audit_entries WHERE tenant_id <> '' GROUP BY tenant_id`)
	if err != nil {
		return nil, fmt.Errorf("projections: audit heads: %w", err)
	}
	defer rows.Close()
	heads := map[string]uint64{}
	for rows.Next() {
		var t string
		var seq int64
		if err := rows.Scan(&t, &seq); err != nil {
			return nil, fmt.Errorf("projections: audit heads: %w", err)
		}
		heads[t] = uint64(seq)
	}
	return heads, rows.Err()
}

// checkpoint signs tenant's chain up to head when due.
func (c *AuditCheckpointer) checkpoint(ctx context.Context, tenant string, head uint64) (auditchain.Checkpoint, bool, error) {
	stream := auditchain.StreamName(tenant)
	last, err := c.cfg.Store.ReadStream(ctx, stream, eventstore.Backwards, eventstore.End, 1)
	if err != nil && !errors.Is(err, eventstore.ErrStreamNotFound) {
		return auditchain.Checkpoint{}, false, fmt.Errorf("projections: audit checkpoints of %q: %w", tenant, err)
	}
	expected, prev := eventstore.NoStream, auditchain.Checkpoint{}
	if len(last) > 0 {
		if err := json.Unmarshal(last[0].Data, &prev); err != nil {
			return auditchain.Checkpoint{}, false, fmt.Errorf("projections: audit checkpoint %s: %w", last[0].ID, err)
		}
		expected = eventstore.Exact(last[0].Revision)
	}
	c.mu.Lock()
	c.known[tenant] = prev.Seq
	c.mu.Unlock()
	if head <= prev.Seq {
		return auditchain.Checkpoint{}, false, nil
	}
	now := c.cfg.Now()
	if head-prev.Seq < uint64(c.cfg.Every) {
		var oldest int64
		if err := c.cfg.DB.QueryRowContext(ctx, `SELECT at_us FROM audit_entries WHERE tenant_id = $1 AND seq = $2`,
			tenant, int64(prev.Seq+1)).Scan(&oldest); err != nil {
			return auditchain.Checkpoint{}, false, fmt.Errorf("projections: audit entry %d of %q: %w", prev.Seq+1, tenant, err)
		}
		if now.Sub(fromUS(oldest)) < c.cfg.Interval {
			return auditchain.Checkpoint{}, false, nil
		}
	}
	headHash, err := c.verifyFrom(ctx, tenant, prev, head)
	if err != nil {
		return auditchain.Checkpoint{}, false, err
	}
	cp := auditchain.Sign(c.cfg.Key, tenant, head, headHash, now)
	body, err := json.Marshal(cp)
	if err != nil {
		return auditchain.Checkpoint{}, false, err
	}
	_, err = c.cfg.Store.Append(ctx, stream, expected, eventstore.EventData{
		ID: uuid.NewSHA1(checkpointNS, []byte(tenant+"/"+strconv.FormatUint(head, 10))), Type: auditchain.TypeCheckpointSigned,
		Data: body, Metadata: eventstore.Metadata{TenantID: tenant, Actor: "waqueue"},
	})
	if errors.Is(err, eventstore.ErrWrongExpectedRevision) {
		return auditchain.Checkpoint{}, false, nil // another node signed first; the next tick sees it
	}
	if err != nil {
		return auditchain.Checkpoint{}, false, fmt.Errorf("projections: append audit checkpoint of %q: %w", tenant, err)
	}
	c.mu.Lock()
	c.known[tenant] = head
	c.mu.Unlock()
	return cp, true, nil
}

// verifyFrom checks tenant's entries from the last checkpoint's entry up to head (that entry
// still has the signed head hash; seqs contiguous, each linked to the one before, each hash
// recomputed) and returns the head's hash. A chain tampered with since the last checkpoint is
// not signed.
func (c *AuditCheckpointer) verifyFrom(ctx context.Context, tenant string, prev auditchain.Checkpoint, head uint64) (string, error) {
	rows, err := c.cfg.DB.QueryContext(ctx, `SELECT `+auditColumns+` FROM audit_entries WHERE tenant_id = $1 AND seq >= $2 AND seq <= $3 ORDER BY seq`,
		tenant, int64(prev.Seq), int64(head))
	if err != nil {
		return "", fmt.Errorf("projections: audit of %q: %w", tenant, err)
	}
	defer rows.Close()
	want, hash := prev.Seq+1, prev.Head
	anchored := prev.Seq == 0
	for rows.Next() {
		en, err := scanAudit(rows)
		if err != nil {
			return "", fmt.Errorf("projections: audit of %q: %w", tenant, err)
		}
		if !anchored {
			if en.Seq != prev.Seq || en.Hash != prev.Head || en.chainHash() != en.Hash {
				return "", fmt.Errorf("projections: audit chain of %q not signed: entry %d no longer matches its checkpoint", tenant, prev.Seq)
			}
			anchored = true
			continue
		}
		switch {
		case en.Seq != want:
			return "", fmt.Errorf("projections: audit chain of %q not signed: seq %d where %d was expected", tenant, en.Seq, want)
		case en.PrevHash != hash:
			return "", fmt.Errorf("projections: audit chain of %q not signed: entry %d is not linked to entry %d", tenant, en.Seq, en.Seq-1)
		case en.chainHash() != en.Hash:
			return "", fmt.Errorf("projections: audit chain of %q not signed: entry %d does not match its hash", tenant, en.Seq)
		}
		want, hash = want+1, en.Hash
	}
	if err := rows.Err(); err != nil {
		return "", fmt.Errorf("projections: audit of %q: %w", tenant, err)
	}
	if want != head+1 {
		return "", fmt.Errorf("projections: audit chain of %q not signed: it ends at %d, not %d", tenant, want-1, head)
	}
	return hash, nil
}

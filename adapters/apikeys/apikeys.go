// Package apikeys issues, authenticates and revokes waqueue's API keys.
//
// A key is "wq_" followed by 43 characters of unpadded base64url: 32 bytes from crypto/rand.
// It is shown once, when created; only its SHA-256 is kept. A fast hash is right here (and a
// slow, salted password KDF would only cost latency on every request): a key with 256 bits of
// randomness cannot be guessed, so there is no dictionary to slow down, and the hash lets the
// authenticator find a key with one indexed lookup.
//
// # Events first, then the table
//
// The lifecycle of keys is recorded as events on the tenant's stream (auth.TenantStream:
// APIKeyCreated, APIKeyRevoked, APIKeyRoleChanged), so every rights change is audited (G8).
// The authenticator reads the table api_keys in the read-model database on every call (nothing
// is cached; concurrent calls share one query, lookup.go). An event store and a read-model database cannot share a transaction, so the
// table is a projection of the key events that Keys keeps synchronously: every change appends
// its event, then catches the table up with the tenant's own stream (read by revision, which
// no other transaction can hold back) before it returns. So a change that returned is in
// effect for every instance sharing the read-model database, at once — also on PostgreSQL
// while an older transaction is open, which holds back the global log ($all) but not a
// stream read.
//
// Instances with a read-model database of their own, and changes whose event was recorded by
// a request that then failed (a crash between the append and the table write), are caught up
// by Run: every interval it applies what the global log shows and re-reads the stream of
// every tenant the table knows. Sync and Rebuild do the same on demand. Applying is
// idempotent and ordered by the stream's revisions (api_keys_streams keeps, per tenant, the
// next revision to apply), so the synchronous path, Run and Sync on any number of instances
// never apply an older event over a newer one.
package apikeys

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/projections"
)

// Prefix starts every API key.
const Prefix = "wq_"

// keyBytes is the randomness of a key.
const keyBytes = 32

// MaxLabelLen is the longest key label.
const MaxLabelLen = 200

// Sentinel errors. Match with errors.Is.
var (
	// ErrInvalidKey: the presented credential is not a live key (unknown, malformed or revoked).
	// The three are indistinguishable on purpose.
	ErrInvalidKey = errors.New("apikeys: invalid api key")
	// ErrNotFound: no key of that id in the caller's tenant (another tenant's key is not found).
	ErrNotFound = errors.New("apikeys: key not found")
	// ErrRevoked: the key is revoked already (revocation is final).
	ErrRevoked = errors.New("apikeys: key revoked")
	// ErrInvalid: a request failed validation (*ValidationError).
	ErrInvalid = errors.New("apikeys: invalid request")
)

// ValidationError names the field of a refused request.
type ValidationError struct {
	Field  string
	Detail string
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("apikeys: invalid %s: %s", e.Field, e.Detail)
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalid }

// Key is a key as listed: never the secret.
type Key struct {
	ID        string    `json:"id"`
	TenantID  string    `json:"tenant_id"`
	Role      auth.Role `json:"role"`
	Label     string    `json:"label"`
	CreatedBy string    `json:"created_by"`
	CreatedAt time.Time `json:"created_at"`
	// RevokedAt is zero for a live key.
	RevokedAt time.Time `json:"revoked_at,omitzero"`
}

// Created is a newly created key with its secret, which is shown this once.
type Created struct {
	Key
	// Secret is the API key itself ("wq_…"). It is not stored anywhere.
	Secret string `json:"secret"`
}

// Keys is the key registry: it records key events and keeps the authenticator's table. It is
// safe for concurrent use.
type Keys struct {
	store eventstore.Store
	db    *projections.DB
	now   func() time.Time
	mu    sync.Mutex // serializes syncTenant in process

	errMu   sync.Mutex
	lastErr error

	lookups lookups // concurrent Identify calls' shared queries

	// beforeAppend, if set (tests only, export_test.go), runs after a tenant change decided and
	// before it appends: a test holds concurrent changes there to make their race certain.
	beforeAppend func()
	// beforeLookup, if set (tests only), runs before each shared key query is sent: a test
	// holds the running queries there to make lookups queue up behind them.
	beforeLookup func()
}

// New returns the registry on store and db; Migrate must have run on db. now is the clock of
// the recorded times (nil means UTC wall clock).
func New(store eventstore.Store, db *projections.DB, now func() time.Time) (*Keys, error) {
	if store == nil || db == nil || db.SQL == nil {
		return nil, errors.New("apikeys: store and db are required")
	}
	if now == nil {
		now = func() time.Time { return time.Now().UTC() }
	}
	return &Keys{store: store, db: db, now: now}, nil
}

// Migrate creates the key table and its checkpoint if they do not exist. It is safe to run at
// every start.
func Migrate(ctx context.Context, db *projections.DB) error {
	for _, q := range []string{
		`CREATE TABLE IF NOT EXISTS api_keys (
			key_id TEXT PRIMARY KEY,
			tenant_id TEXT NOT NULL,
			role TEXT NOT NULL,
			label TEXT NOT NULL,
			key_hash TEXT NOT NULL UNIQUE,
			created_by TEXT NOT NULL,
			created_at_us BIGINT NOT NULL,
			revoked_at_us BIGINT NOT NULL DEFAULT 0)`,
		`CREATE INDEX IF NOT EXISTS api_keys_tenant ON api_keys (tenant_id, key_id)`,
		`CREATE TABLE IF NOT EXISTS api_keys_checkpoint (
			id INTEGER PRIMARY KEY,
			pos_commit BIGINT NOT NULL,
			pos_prepare BIGINT NOT NULL)`,
		`INSERT INTO api_keys_checkpoint (id, pos_commit, pos_prepare) VALUES (1, 0, 0) ON CONFLICT (id) DO NOTHING`,
		// The next revision of each tenant stream to apply. A tenant known from an older
		// table starts at 0: replaying its stream in order is idempotent.
		`CREATE TABLE IF NOT EXISTS api_keys_streams (
			tenant_id TEXT PRIMARY KEY,
			next_rev BIGINT NOT NULL)`,
		`INSERT INTO api_keys_streams (tenant_id, next_rev) SELECT DISTINCT tenant_id, 0 FROM api_keys WHERE true ON CONFLICT (tenant_id) DO NOTHING`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("apikeys: migrate: %w", err)
		}
	}
	for _, q := range migrateTenants() {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("apikeys: migrate: %w", err)
		}
	}
	return nil
}

// Analyze gathers the planner's statistics of the key and tenant tables on PostgreSQL (nothing
// on SQLite); the server runs it at every start. Autovacuum analyzes a table only after 50
// changed rows, which a few keys never reach, and without statistics the key lookup's generic
// plan looks costlier than a custom one: PostgreSQL then planned the lookup afresh on every
// request (0.1–0.15 ms of the server's CPU each, more than running it).
func Analyze(ctx context.Context, db *projections.DB) error {
	if db.Dialect != projections.Postgres {
		return nil
	}
	if _, err := db.ExecContext(ctx, `ANALYZE api_keys, tenants`); err != nil {
		return fmt.Errorf("apikeys: analyze: %w", err)
	}
	return nil
}

// Hash returns the stored form of a key: hex SHA-256.
func Hash(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// Authenticate returns the principal of a live key: its tenant, its id (recorded as the actor
// of everything done with it) and its role. A key of a suspended tenant is ErrTenantSuspended;
// anything else is ErrInvalidKey.
func (k *Keys) Authenticate(ctx context.Context, secret string) (auth.Principal, error) {
	id, err := k.Identify(ctx, secret)
	return id.Principal, err
}

// Identify is Authenticate with the tenant's rate limit, read in the same query.
func (k *Keys) Identify(ctx context.Context, secret string) (Identity, error) {
	if !wellFormed(secret) {
		return Identity{}, ErrInvalidKey
	}
	r, found, err := k.lookupKey(ctx, Hash(secret))
	if err != nil {
		return Identity{}, err
	}
	if !found || r.revoked != 0 {
		return Identity{}, ErrInvalidKey
	}
	role, err := auth.ParseRole(r.role)
	if err != nil {
		return Identity{}, ErrInvalidKey
	}
	if r.status == TenantSuspended {
		return Identity{}, &SuspendedError{TenantID: r.tenantID}
	}
	return Identity{Principal: auth.Principal{TenantID: r.tenantID, ID: r.keyID, Role: role},
		RateLimit: RateLimit{PerSecond: r.perSecond, Burst: int(r.burst)}}, nil
}

func wellFormed(secret string) bool {
	rest, ok := strings.CutPrefix(secret, Prefix)
	if !ok || len(rest) != base64.RawURLEncoding.EncodedLen(keyBytes) {
		return false
	}
	_, err := base64.RawURLEncoding.DecodeString(rest)
	return err == nil
}

// Create issues a key of role in tenantID, labelled label, on behalf of createdBy (the actor:
// a key id, or "bootstrap"). It records APIKeyCreated and returns the key with its secret.
func (k *Keys) Create(ctx context.Context, tenantID string, role auth.Role, label, createdBy string) (Created, error) {
	if err := connection.ValidateID("tenant_id", tenantID); err != nil {
		return Created{}, &ValidationError{Field: "tenant_id", Detail: err.Error()}
	}
	if role.IsZero() {
		return Created{}, &ValidationError{Field: "role", Detail: "required: one of admin, operator, sender, auditor, analyst"}
	}
	if len(label) > MaxLabelLen {
		return Created{}, &ValidationError{Field: "label", Detail: fmt.Sprintf("at most %d bytes", MaxLabelLen)}
	}
	if createdBy == "" {
		return Created{}, &ValidationError{Field: "created_by", Detail: "required"}
	}
	raw := make([]byte, keyBytes)
	if _, err := rand.Read(raw); err != nil {
		return Created{}, fmt.Errorf("apikeys: random: %w", err)
	}
	secret := Prefix + base64.RawURLEncoding.EncodeToString(raw)
	ev := auth.APIKeyCreated{
		KeyID: "key_" + strings.ReplaceAll(uuid.NewString(), "-", "")[:20], TenantID: tenantID, Role: role,
		Label: label, KeyHash: Hash(secret), CreatedBy: createdBy, CreatedAt: k.now().UTC(),
	}
	if err := k.append(ctx, tenantID, createdBy, uuid.New(), ev); err != nil {
		return Created{}, err
	}
	return Created{Key: Key{ID: ev.KeyID, TenantID: tenantID, Role: role, Label: label, CreatedBy: createdBy,
		CreatedAt: ev.CreatedAt}, Secret: secret}, nil
}

// Revoke revokes key keyID of tenantID on behalf of actor, recording APIKeyRevoked. A key of
// another tenant is ErrNotFound; a key seen revoked already ErrRevoked. Concurrent revocations
// of one key record one event (its id is derived from the key, and the store takes the same
// event at the same place as an idempotent retry), and each of them returns nil or ErrRevoked.
func (k *Keys) Revoke(ctx context.Context, tenantID, keyID, actor, reason string) error {
	if len(reason) > connection.MaxNoteLen {
		return &ValidationError{Field: "reason", Detail: fmt.Sprintf("at most %d bytes", connection.MaxNoteLen)}
	}
	// One revocation per key: the event id is derived from the key, so a racing second
	// revocation is either an idempotent retry of the same append or a duplicate elsewhere.
	id := uuid.NewSHA1(connection.Namespace, []byte("apikey-revoked:"+keyID))
	_, err := k.decide(ctx, tenantID, keyID, actor, func(key Key) (uuid.UUID, auth.KeyEvent, error) {
		if !key.RevokedAt.IsZero() {
			return uuid.Nil, nil, fmt.Errorf("%w: %s", ErrRevoked, keyID)
		}
		return id, auth.APIKeyRevoked{KeyID: keyID, Reason: reason, RevokedBy: actor, RevokedAt: k.now().UTC()}, nil
	})
	if errors.Is(err, eventstore.ErrDuplicateEventID) {
		return fmt.Errorf("%w: %s", ErrRevoked, keyID)
	}
	return err
}

// ChangeRole gives key keyID of tenantID the role role on behalf of actor, recording
// APIKeyRoleChanged. Setting the current role is a no-op.
func (k *Keys) ChangeRole(ctx context.Context, tenantID, keyID string, role auth.Role, actor string) (Key, error) {
	if role.IsZero() {
		return Key{}, &ValidationError{Field: "role", Detail: "required: one of admin, operator, sender, auditor, analyst"}
	}
	key, err := k.decide(ctx, tenantID, keyID, actor, func(key Key) (uuid.UUID, auth.KeyEvent, error) {
		if !key.RevokedAt.IsZero() {
			return uuid.Nil, nil, fmt.Errorf("%w: %s", ErrRevoked, keyID)
		}
		if key.Role == role {
			return uuid.Nil, nil, nil
		}
		return uuid.New(), auth.APIKeyRoleChanged{KeyID: keyID, Role: role, PreviousRole: key.Role, ChangedBy: actor, ChangedAt: k.now().UTC()}, nil
	})
	if err != nil {
		return Key{}, err
	}
	key.Role = role
	return key, nil
}

// maxDecideAttempts bounds decide's rounds against concurrent changes of one tenant's keys.
const maxDecideAttempts = 16

// decide records the event that decision makes of key keyID of tenantID as it is at the
// tenant stream's current revision, and returns the key as decided on. The append expects
// that revision, so a change that landed in between (another revocation, another role change,
// on this instance or another) is never overwritten unseen: the table is caught up and the
// decision made again. A nil event records nothing (a no-op); a decision's error is returned
// as it is. Unknown keys and other tenants' keys are ErrNotFound.
func (k *Keys) decide(ctx context.Context, tenantID, keyID, actor string, decision func(Key) (uuid.UUID, auth.KeyEvent, error)) (Key, error) {
	for range maxDecideAttempts {
		next, err := k.syncTenantNext(ctx, tenantID)
		if err != nil {
			return Key{}, err
		}
		key, err := k.Get(ctx, tenantID, keyID)
		if err != nil {
			return Key{}, err
		}
		id, ev, err := decision(key)
		if err != nil || ev == nil {
			return key, err
		}
		if next == 0 { // the key is in the table, so its creation is in the stream
			return Key{}, fmt.Errorf("apikeys: key %s of tenant %s is known, but its tenant stream is not", keyID, tenantID)
		}
		err = k.appendAt(ctx, tenantID, actor, id, ev, eventstore.Exact(next-1))
		if errors.Is(err, eventstore.ErrWrongExpectedRevision) {
			continue // a concurrent change of the tenant's keys: decide again on it
		}
		return key, err
	}
	return Key{}, fmt.Errorf("apikeys: key %s of tenant %s: %d concurrent changes in a row, try again", keyID, tenantID, maxDecideAttempts)
}

func (k *Keys) append(ctx context.Context, tenantID, actor string, id uuid.UUID, ev auth.KeyEvent) error {
	return k.appendAt(ctx, tenantID, actor, id, ev, eventstore.Any)
}

// appendAt appends ev to tenantID's stream on the expectation expected, then catches the table
// up with the stream.
func (k *Keys) appendAt(ctx context.Context, tenantID, actor string, id uuid.UUID, ev auth.KeyEvent, expected eventstore.ExpectedRevision) error {
	typ, data, err := auth.EncodeKeyEvent(ev)
	if err != nil {
		return err
	}
	_, err = k.store.Append(ctx, auth.TenantStream(tenantID), expected, eventstore.EventData{
		ID: id, Type: typ, Data: data,
		Metadata: eventstore.Metadata{TenantID: tenantID, Actor: actor, CorrelationID: commands.CorrelationIDFromContext(ctx)},
	})
	if err != nil {
		return fmt.Errorf("apikeys: record %s: %w", typ, err)
	}
	// The tenant's own stream, not the global log: an older open transaction cannot hold it
	// back, so the change is in effect before the caller is answered.
	return k.syncTenant(ctx, tenantID)
}

// Get returns key keyID of tenantID (revoked or not); ErrNotFound when unknown or another
// tenant's.
func (k *Keys) Get(ctx context.Context, tenantID, keyID string) (Key, error) {
	rows, err := k.db.QueryContext(ctx, `SELECT `+keyColumns+` FROM api_keys WHERE tenant_id = $1 AND key_id = $2`, tenantID, keyID)
	if err != nil {
		return Key{}, fmt.Errorf("apikeys: get: %w", err)
	}
	keys, err := scanKeys(rows)
	if err != nil {
		return Key{}, err
	}
	if len(keys) == 0 {
		return Key{}, fmt.Errorf("%w: %s", ErrNotFound, keyID)
	}
	return keys[0], nil
}

// List returns tenantID's keys, revoked ones included, by creation time.
func (k *Keys) List(ctx context.Context, tenantID string) ([]Key, error) {
	rows, err := k.db.QueryContext(ctx, `SELECT `+keyColumns+` FROM api_keys WHERE tenant_id = $1 ORDER BY created_at_us, key_id`, tenantID)
	if err != nil {
		return nil, fmt.Errorf("apikeys: list: %w", err)
	}
	return scanKeys(rows)
}

// Count returns the number of keys in the table, in every tenant (revoked ones included).
func (k *Keys) Count(ctx context.Context) (int, error) {
	var n int
	if err := k.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM api_keys`).Scan(&n); err != nil {
		return 0, fmt.Errorf("apikeys: count: %w", err)
	}
	return n, nil
}

const keyColumns = `key_id, tenant_id, role, label, created_by, created_at_us, revoked_at_us`

func scanKeys(rows *sql.Rows) ([]Key, error) {
	defer rows.Close()
	var out []Key
	for rows.Next() {
		var (
			key              Key
			role             string
			created, revoked int64
		)
		if err := rows.Scan(&key.ID, &key.TenantID, &role, &key.Label, &key.CreatedBy, &created, &revoked); err != nil {
			return nil, fmt.Errorf("apikeys: scan: %w", err)
		}
		r, err := auth.ParseRole(role)
		if err != nil {
			return nil, fmt.Errorf("apikeys: key %s: %w", key.ID, err)
		}
		key.Role = r
		key.CreatedAt = time.UnixMicro(created).UTC()
		if revoked != 0 {
			key.RevokedAt = time.UnixMicro(revoked).UTC()
		}
		out = append(out, key)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("apikeys: scan: %w", err)
	}
	return out, nil
}

// Filter selects the key events of the global log.
func Filter() eventstore.Filter {
	return eventstore.Filter{StreamPrefixes: []string{auth.TenantStreamPrefix}, EventTypes: auth.TenantStreamEventTypes()}
}

// Sync applies to the table every key event recorded after its checkpoint of the global log,
// each by catching up its tenant's stream, and then re-reads the stream of every tenant the
// table knows (which the global log may hold back on PostgreSQL). It is idempotent and safe to
// call concurrently (also from several processes sharing the database).
func (k *Keys) Sync(ctx context.Context) error {
	for {
		n, err := k.syncPage(ctx, 1000)
		if err != nil {
			return err
		}
		if n == 0 {
			break
		}
	}
	return k.syncKnownTenants(ctx)
}

// Run keeps the table caught up until ctx is done: every interval it runs Sync. It bounds how
// long a key change recorded elsewhere takes to be in effect here (see the package doc) and
// returns ctx.Err(); a failing Sync is retried at the next tick, its error kept for Err.
func (k *Keys) Run(ctx context.Context, interval time.Duration) error {
	if interval <= 0 {
		return errors.New("apikeys: Run: interval must be positive")
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		err := k.Sync(ctx)
		k.errMu.Lock()
		k.lastErr = err
		k.errMu.Unlock()
	}
}

// Err returns the error of Run's last Sync (nil when it succeeded or Run never synced).
func (k *Keys) Err() error {
	k.errMu.Lock()
	defer k.errMu.Unlock()
	return k.lastErr
}

// syncPage reads a page of key events of the global log after its checkpoint, catches up the
// stream of each tenant they belong to, and moves the checkpoint.
func (k *Keys) syncPage(ctx context.Context, limit int) (int, error) {
	var c, p int64
	if err := k.db.QueryRowContext(ctx, `SELECT pos_commit, pos_prepare FROM api_keys_checkpoint WHERE id = 1`).Scan(&c, &p); err != nil {
		return 0, fmt.Errorf("apikeys: sync: read checkpoint: %w", err)
	}
	after := eventstore.Position{Commit: uint64(c), Prepare: uint64(p)}
	events, err := k.store.ReadAll(ctx, after, limit, Filter())
	if err != nil {
		return 0, fmt.Errorf("apikeys: sync: read log: %w", err)
	}
	if len(events) == 0 {
		return 0, nil
	}
	seen := map[string]bool{}
	for _, e := range events {
		tenant, ok := auth.TenantFromStream(e.Stream)
		if !ok || seen[tenant] {
			continue
		}
		seen[tenant] = true
		if err := k.syncTenant(ctx, tenant); err != nil {
			return 0, err
		}
	}
	// Another instance may have moved the checkpoint further meanwhile: never move it back.
	last := events[len(events)-1].Position
	if _, err := k.db.ExecContext(ctx, `UPDATE api_keys_checkpoint SET pos_commit = $1, pos_prepare = $2
		WHERE id = 1 AND (pos_commit < $1 OR (pos_commit = $1 AND pos_prepare < $2))`,
		int64(last.Commit), int64(last.Prepare)); err != nil {
		return 0, fmt.Errorf("apikeys: sync: checkpoint: %w", err)
	}
	return len(events), nil
}

// syncKnownTenants catches up the stream of every tenant in api_keys_streams.
func (k *Keys) syncKnownTenants(ctx context.Context) error {
	rows, err := k.db.QueryContext(ctx, `SELECT tenant_id FROM api_keys_streams ORDER BY tenant_id`)
	if err != nil {
		return fmt.Errorf("apikeys: sync: tenants: %w", err)
	}
	var tenants []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			_ = rows.Close()
			return fmt.Errorf("apikeys: sync: tenants: %w", err)
		}
		tenants = append(tenants, t)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return fmt.Errorf("apikeys: sync: tenants: %w", err)
	}
	for _, t := range tenants {
		if err := k.syncTenant(ctx, t); err != nil {
			return err
		}
	}
	return nil
}

// syncTenant applies the events of tenantID's stream from the tenant's next revision on, in
// revision order, page by page; each page and the tenant's next revision commit together. On
// PostgreSQL the tenant's row is locked for the page, so instances sharing the database apply
// each event once and in order; in process, k.mu serializes it.
func (k *Keys) syncTenant(ctx context.Context, tenantID string) error {
	_, err := k.syncTenantNext(ctx, tenantID)
	return err
}

// syncTenantNext catches the table up with tenantID's stream and returns the revision after
// the last event applied (0: no stream): the table reflects the stream up to it.
func (k *Keys) syncTenantNext(ctx context.Context, tenantID string) (uint64, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	const page = 1000
	for {
		n, next, err := k.syncTenantPage(ctx, tenantID, page)
		if err != nil {
			return 0, err
		}
		if n < page {
			return next, nil
		}
	}
}

// syncTenantPage applies at most limit events of tenantID's stream to the table and returns
// how many it read and the revision after the last event applied.
func (k *Keys) syncTenantPage(ctx context.Context, tenantID string, limit int) (int, uint64, error) {
	tx, err := k.db.Begin(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("apikeys: sync %s: %w", tenantID, err)
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, `INSERT INTO api_keys_streams (tenant_id, next_rev) VALUES ($1, 0) ON CONFLICT (tenant_id) DO NOTHING`, tenantID); err != nil {
		return 0, 0, fmt.Errorf("apikeys: sync %s: %w", tenantID, err)
	}
	lock := ""
	if k.db.Dialect == projections.Postgres {
		lock = " FOR UPDATE"
	}
	var next int64
	if err := tx.QueryRowContext(ctx, `SELECT next_rev FROM api_keys_streams WHERE tenant_id = $1`+lock, tenantID).Scan(&next); err != nil {
		return 0, 0, fmt.Errorf("apikeys: sync %s: %w", tenantID, err)
	}
	events, err := k.store.ReadStream(ctx, auth.TenantStream(tenantID), eventstore.Forwards, uint64(next), limit)
	if errors.Is(err, eventstore.ErrStreamNotFound) {
		return 0, uint64(next), tx.Commit()
	}
	if err != nil {
		return 0, 0, fmt.Errorf("apikeys: sync %s: read stream: %w", tenantID, err)
	}
	if len(events) == 0 {
		return 0, uint64(next), tx.Commit()
	}
	for _, e := range events {
		if !Filter().Match(e) {
			continue
		}
		if err := applyEvent(ctx, tx, e); err != nil {
			return 0, 0, err
		}
	}
	last := events[len(events)-1].Revision
	if _, err := tx.ExecContext(ctx, `UPDATE api_keys_streams SET next_rev = $1 WHERE tenant_id = $2`, int64(last)+1, tenantID); err != nil {
		return 0, 0, fmt.Errorf("apikeys: sync %s: %w", tenantID, err)
	}
	if err := tx.Commit(); err != nil {
		return 0, 0, fmt.Errorf("apikeys: sync %s: commit: %w", tenantID, err)
	}
	return len(events), last + 1, nil
}

func applyEvent(ctx context.Context, tx *projections.Tx, e eventstore.RecordedEvent) error {
	tenant, ok := auth.TenantFromStream(e.Stream)
	if !ok {
		return nil
	}
	if slices.Contains(auth.TenantEventTypes(), e.Type) {
		return applyTenantEvent(ctx, tx, tenant, e)
	}
	ev, err := auth.DecodeKeyEvent(e.Type, e.Data)
	if err != nil {
		return fmt.Errorf("apikeys: event %s at %s: %w", e.ID, e.Position, err)
	}
	switch v := ev.(type) {
	case auth.APIKeyCreated:
		_, err = tx.ExecContext(ctx, `INSERT INTO api_keys (key_id, tenant_id, role, label, key_hash, created_by, created_at_us)
			VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (key_id) DO NOTHING`,
			v.KeyID, tenant, v.Role.String(), v.Label, v.KeyHash, v.CreatedBy, v.CreatedAt.UnixMicro())
	case auth.APIKeyRevoked:
		at := v.RevokedAt.UnixMicro()
		if at == 0 {
			at = 1
		}
		_, err = tx.ExecContext(ctx, `UPDATE api_keys SET revoked_at_us = $1 WHERE key_id = $2 AND tenant_id = $3 AND revoked_at_us = 0`,
			at, v.KeyID, tenant)
	case auth.APIKeyRoleChanged:
		_, err = tx.ExecContext(ctx, `UPDATE api_keys SET role = $1 WHERE key_id = $2 AND tenant_id = $3`, v.Role.String(), v.KeyID, tenant)
	}
	if err != nil {
		return fmt.Errorf("apikeys: apply %s: %w", e.Type, err)
	}
	return nil
}

// Rebuild empties the table and its checkpoint and applies every key event from the start of
// the log.
func (k *Keys) Rebuild(ctx context.Context) error {
	k.mu.Lock()
	tx, err := k.db.Begin(ctx)
	if err != nil {
		k.mu.Unlock()
		return fmt.Errorf("apikeys: rebuild: %w", err)
	}
	_, err1 := tx.ExecContext(ctx, `DELETE FROM api_keys`)
	_, err2 := tx.ExecContext(ctx, `UPDATE api_keys_checkpoint SET pos_commit = 0, pos_prepare = 0 WHERE id = 1`)
	_, err3 := tx.ExecContext(ctx, `DELETE FROM api_keys_streams`)
	_, err4 := tx.ExecContext(ctx, `DELETE FROM tenants`)
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		_ = tx.Rollback()
		k.mu.Unlock()
		return fmt.Errorf("apikeys: rebuild: %w", err)
	}
	if err := tx.Commit(); err != nil {
		k.mu.Unlock()
		return fmt.Errorf("apikeys: rebuild: %w", err)
	}
	k.mu.Unlock()
	return k.Sync(ctx)
}

// AuditRule is the audit projection's rule for rights changes (G8): the key and tenant events
// of the tenant streams, with the tenant taken from the stream name. Add it to
// projections.DefaultAuditRules() when building the audit projection.
func AuditRule() projections.AuditRule {
	return projections.AuditRule{StreamPrefix: auth.TenantStreamPrefix, EventTypes: auth.TenantStreamEventTypes(), TenantFromStream: true}
}

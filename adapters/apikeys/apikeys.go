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
// The authenticator reads the table api_keys in the read-model database. An event store and a
// read-model database cannot share a transaction, so the table is a projection of the key
// events that Keys keeps synchronously: every change appends its event, then catches the
// table up to the log (Sync) before it returns. If the process dies in between, the next Sync
// (at start, or by any later change) applies the missing events: the table never holds a key
// the log does not, and a change that returned is visible to every instance sharing the
// database. Rebuild recreates the table from the log.
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
	mu    sync.Mutex // serializes Sync in process
}

var _ commands.Authenticator = (*Keys)(nil)

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
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("apikeys: migrate: %w", err)
		}
	}
	return nil
}

// Hash returns the stored form of a key: hex SHA-256.
func Hash(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// Authenticate returns the principal of a live key: its tenant, its id (recorded as the actor
// of everything done with it) and its role. Anything else is ErrInvalidKey.
func (k *Keys) Authenticate(ctx context.Context, secret string) (auth.Principal, error) {
	if !wellFormed(secret) {
		return auth.Principal{}, ErrInvalidKey
	}
	var (
		p       auth.Principal
		role    string
		revoked int64
	)
	err := k.db.QueryRowContext(ctx, `SELECT key_id, tenant_id, role, revoked_at_us FROM api_keys WHERE key_hash = $1`,
		Hash(secret)).Scan(&p.ID, &p.TenantID, &role, &revoked)
	if errors.Is(err, sql.ErrNoRows) {
		return auth.Principal{}, ErrInvalidKey
	}
	if err != nil {
		return auth.Principal{}, fmt.Errorf("apikeys: authenticate: %w", err)
	}
	if revoked != 0 {
		return auth.Principal{}, ErrInvalidKey
	}
	if p.Role, err = auth.ParseRole(role); err != nil {
		return auth.Principal{}, ErrInvalidKey
	}
	return p, nil
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
	key, err := k.Get(ctx, tenantID, keyID)
	if err != nil {
		return err
	}
	if !key.RevokedAt.IsZero() {
		return fmt.Errorf("%w: %s", ErrRevoked, keyID)
	}
	if len(reason) > connection.MaxNoteLen {
		return &ValidationError{Field: "reason", Detail: fmt.Sprintf("at most %d bytes", connection.MaxNoteLen)}
	}
	// One revocation per key: the event id is derived from the key, so a racing second
	// revocation is either an idempotent retry of the same append or a duplicate elsewhere.
	id := uuid.NewSHA1(connection.Namespace, []byte("apikey-revoked:"+keyID))
	err = k.append(ctx, tenantID, actor, id, auth.APIKeyRevoked{KeyID: keyID, Reason: reason, RevokedBy: actor, RevokedAt: k.now().UTC()})
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
	key, err := k.Get(ctx, tenantID, keyID)
	if err != nil {
		return Key{}, err
	}
	if !key.RevokedAt.IsZero() {
		return Key{}, fmt.Errorf("%w: %s", ErrRevoked, keyID)
	}
	if key.Role == role {
		return key, nil
	}
	ev := auth.APIKeyRoleChanged{KeyID: keyID, Role: role, PreviousRole: key.Role, ChangedBy: actor, ChangedAt: k.now().UTC()}
	if err := k.append(ctx, tenantID, actor, uuid.New(), ev); err != nil {
		return Key{}, err
	}
	key.Role = role
	return key, nil
}

func (k *Keys) append(ctx context.Context, tenantID, actor string, id uuid.UUID, ev auth.KeyEvent) error {
	typ, data, err := auth.EncodeKeyEvent(ev)
	if err != nil {
		return err
	}
	_, err = k.store.Append(ctx, auth.TenantStream(tenantID), eventstore.Any, eventstore.EventData{
		ID: id, Type: typ, Data: data,
		Metadata: eventstore.Metadata{TenantID: tenantID, Actor: actor, CorrelationID: commands.CorrelationIDFromContext(ctx)},
	})
	if err != nil {
		return fmt.Errorf("apikeys: record %s: %w", typ, err)
	}
	return k.Sync(ctx)
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
	return eventstore.Filter{StreamPrefixes: []string{auth.TenantStreamPrefix}, EventTypes: auth.KeyEventTypes()}
}

// Sync applies to the table every key event recorded after its checkpoint, in one transaction
// per page that also moves the checkpoint. It is idempotent and safe to call concurrently (also
// from several processes sharing the database).
func (k *Keys) Sync(ctx context.Context) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	for {
		n, err := k.syncPage(ctx, 1000)
		if err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
	}
}

func (k *Keys) syncPage(ctx context.Context, limit int) (int, error) {
	tx, err := k.db.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("apikeys: sync: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	lock := ""
	if k.db.Dialect == projections.Postgres {
		lock = " FOR UPDATE"
	}
	var after eventstore.Position
	var c, p int64
	if err := tx.QueryRowContext(ctx, `SELECT pos_commit, pos_prepare FROM api_keys_checkpoint WHERE id = 1`+lock).Scan(&c, &p); err != nil {
		return 0, fmt.Errorf("apikeys: sync: read checkpoint: %w", err)
	}
	after = eventstore.Position{Commit: uint64(c), Prepare: uint64(p)}
	events, err := k.store.ReadAll(ctx, after, limit, Filter())
	if err != nil {
		return 0, fmt.Errorf("apikeys: sync: read log: %w", err)
	}
	if len(events) == 0 {
		return 0, nil
	}
	for _, e := range events {
		if err := applyEvent(ctx, tx, e); err != nil {
			return 0, err
		}
	}
	last := events[len(events)-1].Position
	if _, err := tx.ExecContext(ctx, `UPDATE api_keys_checkpoint SET pos_commit = $1, pos_prepare = $2 WHERE id = 1`,
		int64(last.Commit), int64(last.Prepare)); err != nil {
		return 0, fmt.Errorf("apikeys: sync: checkpoint: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("apikeys: sync: commit: %w", err)
	}
	return len(events), nil
}

func applyEvent(ctx context.Context, tx *projections.Tx, e eventstore.RecordedEvent) error {
	tenant, ok := auth.TenantFromStream(e.Stream)
	if !ok {
		return nil
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
	if err := errors.Join(err1, err2); err != nil {
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

// AuditRule is the audit projection's rule for rights changes (G8): the key events of the
// tenant streams, with the tenant taken from the stream name. Add it to
// projections.DefaultAuditRules() when building the audit projection.
func AuditRule() projections.AuditRule {
	return projections.AuditRule{StreamPrefix: auth.TenantStreamPrefix, EventTypes: auth.KeyEventTypes(), TenantFromStream: true}
}

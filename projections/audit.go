package projections

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/domain/auditchain"
	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
)

// AuditName is the name (and checkpoint key) of the audit projection.
const AuditName = "audit"

// AuditRule selects audited events: those of streams starting with StreamPrefix whose type is
// one of EventTypes.
type AuditRule struct {
	StreamPrefix string
	EventTypes   []string
	// TenantFromStream takes the tenant from the stream name after StreamPrefix (for streams
	// named "tenant-<id>") when the event's metadata and body name none.
	TenantFromStream bool
	// RedactFields are top-level body fields left out of the entry's details (secrets, hashes
	// of secrets).
	RedactFields []string
}

// DefaultAuditRules returns the audited events (G8): of connection streams, registrations,
// policy changes, pairings, session losses, bans, lifts, transport problems observed
// (TransportProblemObserved), holds, resumes, clear requests, QueueCleared and cancels of one
// message (MessageCancelled), sending policy changes (SendingPolicyChanged); of tenant streams, the rights changes (API keys created, revoked, role changed;
// the key hash is redacted) and the tenant's lifecycle (created, renamed, suspended, resumed,
// rate limit set). Another audited event is one more rule (or one more type).
func DefaultAuditRules() []AuditRule {
	return []AuditRule{{
		StreamPrefix: auth.TenantStreamPrefix, TenantFromStream: true,
		EventTypes: auth.TenantStreamEventTypes(), RedactFields: []string{"key_hash"},
	}, {
		StreamPrefix: connection.StreamPrefix,
		EventTypes: []string{
			connection.TypeConnectionRegistered, connection.TypeOnBanPolicyChanged, connection.TypeSessionPaired,
			connection.TypeSessionInvalidated, connection.TypeConnectionBanned, connection.TypeBanLifted,
			connection.TypeQueueHeld, connection.TypeQueueResumed, connection.TypeClearQueueRequested,
			connection.TypeQueueCleared, connection.TypeTransportProblemObserved, connection.TypeMessageCancelled,
			connection.TypeSendingPolicyChanged,
			connection.TypeConnectionRetired,
		},
	}}
}

// Audit is the audit trail (G8): one row per audited event, with tenant, connection, actor,
// reason, time and details (the event body), never updated after insert. Rows are chained per
// tenant: seq is 1, 2, 3, … and hash = SHA-256(prev_hash || canonical entry bytes), hex-encoded,
// so Verify detects any row altered, removed or inserted. It also keeps the chain's signed
// checkpoints (audit_checkpoints, from the AuditCheckpointSigned events AuditCheckpointer
// appends), so that a rewritten chain or a cut tail is detected too (VerifySince).
type Audit struct {
	rules []AuditRule
	wake  func()
}

// OnCommit sets f (typically AuditCheckpointer.Wake) to be called after a batch that added
// entries has committed. Call it before the runner starts.
func (a *Audit) OnCommit(f func()) { a.wake = f }

var _ AfterCommitter = (*Audit)(nil)

// AfterCommit implements AfterCommitter.
func (a *Audit) AfterCommit(events []eventstore.RecordedEvent) {
	if a.wake == nil {
		return
	}
	for _, e := range events {
		if _, ok := a.rule(e); ok {
			a.wake()
			return
		}
	}
}

// NewAudit returns the audit projection for rules (DefaultAuditRules when none).
func NewAudit(rules ...AuditRule) *Audit {
	if len(rules) == 0 {
		rules = DefaultAuditRules()
	}
	return &Audit{rules: rules}
}

var _ Projection = (*Audit)(nil)

// Name implements Projection.
func (*Audit) Name() string { return AuditName }

// Filter implements Projection. It is the union of the rules; Apply checks each event against
// the rules themselves.
func (a *Audit) Filter() eventstore.Filter {
	var f eventstore.Filter
	for _, r := range a.rules {
		f.StreamPrefixes = append(f.StreamPrefixes, r.StreamPrefix)
		f.EventTypes = append(f.EventTypes, r.EventTypes...)
	}
	f.StreamPrefixes = append(f.StreamPrefixes, connection.StreamPrefix, auditchain.StreamPrefix)
	f.EventTypes = append(f.EventTypes, connection.TypeConnectionRegistered, auditchain.TypeCheckpointSigned)
	slices.Sort(f.StreamPrefixes)
	slices.Sort(f.EventTypes)
	f.StreamPrefixes, f.EventTypes = slices.Compact(f.StreamPrefixes), slices.Compact(f.EventTypes)
	return f
}

// Reset implements Projection. Rebuilding recreates the same chain from the same log, so the
// checkpoints (rebuilt from their events) still match it.
func (*Audit) Reset(ctx context.Context, tx *Tx) error {
	return execAll(ctx, tx, `DELETE FROM audit_entries`, `DELETE FROM audit_conns`, `DELETE FROM audit_checkpoints`, `DELETE FROM audit_actors`)
}

func (a *Audit) rule(e eventstore.RecordedEvent) (AuditRule, bool) {
	for _, r := range a.rules {
		if strings.HasPrefix(e.Stream, r.StreamPrefix) && slices.Contains(r.EventTypes, e.Type) {
			return r, true
		}
	}
	return AuditRule{}, false
}

type chainHead struct {
	seq  int64
	hash string
}

// Apply implements Projection.
func (a *Audit) Apply(ctx context.Context, tx *Tx, events []eventstore.RecordedEvent) error {
	tenants := map[string]string{}
	heads := map[string]chainHead{}
	for _, e := range events {
		if e.Type == auditchain.TypeCheckpointSigned && strings.HasPrefix(e.Stream, auditchain.StreamPrefix) {
			if err := insertCheckpoint(ctx, tx, e); err != nil {
				return err
			}
			continue
		}
		connID, isConn := connection.IDFromStream(e.Stream)
		if isConn && e.Type == connection.TypeConnectionRegistered {
			var reg connection.ConnectionRegistered
			if err := json.Unmarshal(e.Data, &reg); err != nil {
				return fmt.Errorf("event %s: %w", e.ID, err)
			}
			tenants[connID] = reg.TenantID
			if _, err := tx.ExecContext(ctx, `INSERT INTO audit_conns (conn_id, tenant_id) VALUES ($1, $2)
ON CONFLICT (conn_id) DO UPDATE SET tenant_id = excluded.tenant_id`, connID, reg.TenantID); err != nil {
				return err
			}
		}
		rule, ok := a.rule(e)
		if !ok {
			continue
		}
		entry, err := auditEntryOf(e, rule)
		if err != nil {
			return err
		}
		if err := recordActor(ctx, tx, e, entry.TenantID); err != nil {
			return err
		}
		if entry.ActorLabel, entry.ActorRole, err = actorOf(ctx, tx, entry.Actor); err != nil {
			return err
		}
		if isConn {
			_, entry.ConnectionID = connection.SplitKey(connID) // rows are keyed by (tenant_id, conn_id)
			if entry.TenantID, err = tenantOf(ctx, tx, "audit_conns", connID, entry.TenantID, tenants); err != nil {
				return err
			}
		}
		head, ok := heads[entry.TenantID]
		if !ok {
			err := tx.QueryRowContext(ctx, `SELECT seq, hash FROM audit_entries WHERE tenant_id = $1 ORDER BY seq DESC LIMIT 1`,
				entry.TenantID).Scan(&head.seq, &head.hash)
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("audit chain head of %q: %w", entry.TenantID, err)
			}
		}
		entry.Seq, entry.PrevHash = uint64(head.seq+1), head.hash
		entry.Hash = entry.chainHash()
		if _, err := tx.ExecContext(ctx, `INSERT INTO audit_entries (tenant_id, seq, event_id, stream, conn_id, event_type, actor, reason,
at_us, details, prev_hash, hash, actor_label, actor_role) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`,
			entry.TenantID, int64(entry.Seq), entry.EventID.String(), entry.Stream, entry.ConnectionID, entry.EventType, entry.Actor,
			entry.Reason, us(entry.At), string(entry.Details), entry.PrevHash, entry.Hash, entry.ActorLabel, entry.ActorRole); err != nil {
			return fmt.Errorf("audit event %s: %w", e.ID, err)
		}
		heads[entry.TenantID] = chainHead{int64(entry.Seq), entry.Hash}
	}
	return nil
}

// actorKeys and reasonKeys are the body fields an audited event names its actor and reason in,
// in order of preference.
var (
	actorKeys = []string{"actor", "completed_by", "requested_by", "registered_by", "changed_by", "revoked_by", "created_by", "started_by", "cancelled_by",
		"retired_by", "renamed_by", "suspended_by", "resumed_by", "set_by"}
	reasonKeys = []string{"reason", "reason_code", "note", "cause"}
)

func auditEntryOf(e eventstore.RecordedEvent, rule AuditRule) (AuditEntry, error) {
	en := AuditEntry{TenantID: e.Metadata.TenantID, EventID: e.ID, Stream: e.Stream, EventType: e.Type, At: e.RecordedAt.UTC().Truncate(time.Microsecond)}
	var body bytes.Buffer
	if err := json.Compact(&body, e.Data); err != nil {
		return en, fmt.Errorf("audit event %s: body: %w", e.ID, err)
	}
	en.Details = body.Bytes()
	var fields map[string]any
	_ = json.Unmarshal(en.Details, &fields) // a non-object body has no actor or reason fields
	if len(rule.RedactFields) > 0 && fields != nil {
		for _, f := range rule.RedactFields {
			delete(fields, f)
		}
		redacted, err := json.Marshal(fields) // map keys sorted: deterministic
		if err != nil {
			return en, fmt.Errorf("audit event %s: redact: %w", e.ID, err)
		}
		en.Details = redacted
	}
	en.Actor = firstString(fields, actorKeys)
	if en.Actor == "" {
		en.Actor = e.Metadata.Actor
	}
	en.Reason = firstString(fields, reasonKeys)
	if s, ok := fields["connection_id"].(string); ok {
		en.ConnectionID = s
	}
	if en.TenantID == "" {
		if s, ok := fields["tenant_id"].(string); ok {
			en.TenantID = s
		} else if rule.TenantFromStream {
			en.TenantID = strings.TrimPrefix(e.Stream, rule.StreamPrefix)
		}
	}
	return en, nil
}

func firstString(m map[string]any, keys []string) string {
	for _, k := range keys {
		if s, ok := m[k].(string); ok && s != "" {
			return s
		}
	}
	return ""
}

// AuditEntry is one row of the audit trail.
type AuditEntry struct {
	TenantID string
	// Seq is the entry's position in its tenant's chain: 1, 2, 3, …
	Seq          uint64
	EventID      uuid.UUID
	Stream       string
	ConnectionID string
	EventType    string
	Actor        string
	Reason       string
	// At is when the event was recorded.
	At time.Time
	// Details is the event body (compact JSON).
	Details json.RawMessage
	// PrevHash is the Hash of entry Seq-1 ("" for the first); Hash chains this entry to it.
	PrevHash, Hash string
	// ActorLabel and ActorRole are the label and role of the API key Actor names, as they were
	// when the entry was recorded (empty when the actor is no key: the node, "bootstrap"). They
	// are not covered by the hash chain: they explain the actor, whose id is.
	ActorLabel, ActorRole string
}

// Link returns what the entry's hash covers.
func (en AuditEntry) Link() auditchain.Link {
	return auditchain.Link{Tenant: en.TenantID, Seq: en.Seq, EventID: en.EventID.String(), Stream: en.Stream,
		Connection: en.ConnectionID, Type: en.EventType, Actor: en.Actor, Reason: en.Reason, AtUS: us(en.At),
		Details: string(en.Details), PrevHash: en.PrevHash}
}

// chainHash returns hex(SHA-256(PrevHash || canonical bytes)) (auditchain.Link.Hash).
func (en AuditEntry) chainHash() string { return en.Link().Hash() }

// AuditFilter narrows an audit query; zero fields do not filter.
type AuditFilter struct {
	ConnectionID string
	EventType    string
	Actor        string
	// From (inclusive) and To (exclusive) bound the recorded time.
	From, To time.Time
	// Cursor continues a previous page (AuditPage.NextCursor); "" starts at the oldest entry.
	Cursor string
	// Limit is the page size: default 100, at most 1000.
	Limit int
}

// AuditPage is a page of audit entries, oldest first.
type AuditPage struct {
	Entries []AuditEntry
	// NextCursor continues after the last entry; "" when this page is the last.
	NextCursor string
}

// ErrBadCursor is returned for a cursor that AuditPage did not produce.
var ErrBadCursor = errors.New("projections: bad cursor")

const auditColumns = `tenant_id, seq, event_id, stream, conn_id, event_type, actor, reason, at_us, details, prev_hash, hash, actor_label, actor_role`

func scanAudit(rows *sql.Rows) (AuditEntry, error) {
	var en AuditEntry
	var seq, at int64
	var id, details string
	if err := rows.Scan(&en.TenantID, &seq, &id, &en.Stream, &en.ConnectionID, &en.EventType, &en.Actor, &en.Reason, &at,
		&details, &en.PrevHash, &en.Hash, &en.ActorLabel, &en.ActorRole); err != nil {
		return en, err
	}
	var err error
	if en.EventID, err = uuid.Parse(id); err != nil {
		return en, err
	}
	en.Seq, en.At, en.Details = uint64(seq), fromUS(at), json.RawMessage(details)
	return en, nil
}

// Entries returns a page of tenant's audit trail matching f, oldest first.
func (a *Audit) Entries(ctx context.Context, db *DB, tenant string, f AuditFilter) (AuditPage, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	limit = min(limit, 1000)
	var after int64
	if f.Cursor != "" {
		v, err := strconv.ParseInt(f.Cursor, 10, 64)
		if err != nil || v < 0 {
			return AuditPage{}, fmt.Errorf("%w: %q", ErrBadCursor, f.Cursor)
		}
		after = v
	}
	where := []string{"tenant_id = $1", "seq > $2"}
	args := []any{tenant, after}
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, fmt.Sprintf(cond, len(args)))
	}
	if f.ConnectionID != "" {
		add("conn_id = $%d", f.ConnectionID)
	}
	if f.EventType != "" {
		add("event_type = $%d", f.EventType)
	}
	if f.Actor != "" {
		add("actor = $%d", f.Actor)
	}
	if !f.From.IsZero() {
		add("at_us >= $%d", f.From.UnixMicro())
	}
	if !f.To.IsZero() {
		add("at_us < $%d", f.To.UnixMicro())
	}
	args = append(args, limit+1)
	rows, err := db.QueryContext(ctx, `SELECT `+auditColumns+` FROM audit_entries WHERE `+strings.Join(where, " AND ")+
		fmt.Sprintf(` ORDER BY seq LIMIT $%d`, len(args)), args...)
	if err != nil {
		return AuditPage{}, fmt.Errorf("projections: audit of %q: %w", tenant, err)
	}
	defer rows.Close()
	var page AuditPage
	for rows.Next() {
		en, err := scanAudit(rows)
		if err != nil {
			return AuditPage{}, fmt.Errorf("projections: audit of %q: %w", tenant, err)
		}
		page.Entries = append(page.Entries, en)
	}
	if err := rows.Err(); err != nil {
		return AuditPage{}, fmt.Errorf("projections: audit of %q: %w", tenant, err)
	}
	if len(page.Entries) > limit {
		page.Entries = page.Entries[:limit]
		page.NextCursor = strconv.FormatUint(page.Entries[limit-1].Seq, 10)
	}
	return page, nil
}

// VerifyResult is the outcome of recomputing a tenant's audit chain.
type VerifyResult struct {
	// OK is true when every entry's seq, prev_hash and hash are as recomputed.
	OK bool
	// Checked is the number of entries read.
	Checked int
	// FirstBadSeq is the seq of the first entry that does not verify (0 when OK).
	FirstBadSeq uint64
	// Problem says what is wrong with it.
	Problem string
	// Head is the hash of the last entry (publish it elsewhere to detect truncation).
	Head string
}

// Verify recomputes tenant's chain from the first entry. A row altered, removed or inserted
// after the fact makes OK false and names the first bad seq. It trusts the database: a chain
// recomputed after an edit, or a cut tail, verifies here; VerifySince (anchored at a signed
// checkpoint) detects those.
func (a *Audit) Verify(ctx context.Context, db *DB, tenant string) (VerifyResult, error) {
	rows, err := db.QueryContext(ctx, `SELECT `+auditColumns+` FROM audit_entries WHERE tenant_id = $1 ORDER BY seq`, tenant)
	if err != nil {
		return VerifyResult{}, fmt.Errorf("projections: verify audit of %q: %w", tenant, err)
	}
	defer rows.Close()
	res := VerifyResult{OK: true}
	prev := ""
	for rows.Next() {
		en, err := scanAudit(rows)
		if err != nil {
			return VerifyResult{}, fmt.Errorf("projections: verify audit of %q: %w", tenant, err)
		}
		res.Checked++
		problem := ""
		switch {
		case en.Seq != uint64(res.Checked):
			problem = fmt.Sprintf("seq %d where %d was expected (an entry is missing)", en.Seq, res.Checked)
		case en.PrevHash != prev:
			problem = "prev_hash does not match the previous entry's hash"
		case en.chainHash() != en.Hash:
			problem = "hash does not match the entry's contents"
		}
		if problem != "" {
			res.OK, res.FirstBadSeq, res.Problem = false, en.Seq, problem
			return res, nil
		}
		prev = en.Hash
	}
	if err := rows.Err(); err != nil {
		return VerifyResult{}, fmt.Errorf("projections: verify audit of %q: %w", tenant, err)
	}
	res.Head = prev
	return res, nil
}

// recordActor keeps audit_actors from the key events: a key created (its label and role) and a
// role changed.
func recordActor(ctx context.Context, tx *Tx, e eventstore.RecordedEvent, tenant string) error {
	var v struct {
		KeyID string `json:"key_id"`
		Label string `json:"label"`
		Role  string `json:"role"`
	}
	var err error
	switch e.Type {
	case auth.TypeAPIKeyCreated:
		if err := json.Unmarshal(e.Data, &v); err != nil {
			return fmt.Errorf("audit event %s: %w", e.ID, err)
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO audit_actors (tenant_id, key_id, label, role) VALUES ($1, $2, $3, $4)
ON CONFLICT (tenant_id, key_id) DO UPDATE SET label = excluded.label, role = excluded.role`, tenant, v.KeyID, v.Label, v.Role)
	case auth.TypeAPIKeyRoleChanged:
		if err := json.Unmarshal(e.Data, &v); err != nil {
			return fmt.Errorf("audit event %s: %w", e.ID, err)
		}
		_, err = tx.ExecContext(ctx, `UPDATE audit_actors SET role = $1 WHERE tenant_id = $2 AND key_id = $3`, v.Role, tenant, v.KeyID)
	}
	if err != nil {
		return fmt.Errorf("audit event %s: actor: %w", e.ID, err)
	}
	return nil
}

// actorOf returns the label and role of the key actor names ("" and "" for an actor that is
// no key the trail has seen created).
func actorOf(ctx context.Context, tx *Tx, actor string) (label, role string, err error) {
	if actor == "" {
		return "", "", nil
	}
	err = tx.QueryRowContext(ctx, `SELECT label, role FROM audit_actors WHERE key_id = $1 LIMIT 1`, actor).Scan(&label, &role)
	if errors.Is(err, sql.ErrNoRows) {
		return "", "", nil
	}
	if err != nil {
		return "", "", fmt.Errorf("audit actor %q: %w", actor, err)
	}
	return label, role, nil
}

package projections

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/domain/connection"
)

// ClearsName is the name (and checkpoint key) of the clear-reports projection.
const ClearsName = "clears"

// Clears is the read model of clear reports: one row per clear of a connection, made from its
// ClearQueueRequested (status requested) and completed by its QueueCleared (status completed),
// with who asked, why, when, what comes after (then, queue_after), and the exact purged ranges
// and in-flight messages as the events carry them. A clear's report is found, and a
// connection's clears are listed, from here, however long the connection's history is.
//
// Rows are keyed by tenant, connection and clear id; a row is written only from its own
// events, so the projection is idempotent and a rebuild from the history gives the same rows.
type Clears struct{}

// NewClears returns the clear-reports projection.
func NewClears() *Clears { return &Clears{} }

var _ Projection = (*Clears)(nil)

// Name implements Projection.
func (*Clears) Name() string { return ClearsName }

// Filter implements Projection.
func (*Clears) Filter() eventstore.Filter {
	return connectionFilter(connection.TypeConnectionRegistered, connection.TypeClearQueueRequested, connection.TypeQueueCleared)
}

// Reset implements Projection.
func (*Clears) Reset(ctx context.Context, tx *Tx) error {
	return execAll(ctx, tx, `DELETE FROM clear_reports`, `DELETE FROM clear_conns`)
}

// Clear statuses of the read model.
const (
	ClearStatusRequested = "requested"
	ClearStatusCompleted = "completed"
)

// Apply implements Projection.
func (c *Clears) Apply(ctx context.Context, tx *Tx, events []eventstore.RecordedEvent) error {
	tenants := map[string]string{}
	for _, e := range events {
		connID, ev, ok, err := decodeConn(e)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		if err := c.apply(ctx, tx, e, connID, ev, tenants); err != nil {
			return fmt.Errorf("event %s (%s): %w", e.ID, e.Type, err)
		}
	}
	return nil
}

func (*Clears) apply(ctx context.Context, tx *Tx, e eventstore.RecordedEvent, connID string, ev connection.Event, tenants map[string]string) error {
	switch ev := ev.(type) {
	case connection.ConnectionRegistered:
		tenants[connID] = ev.TenantID
		_, err := tx.ExecContext(ctx, `INSERT INTO clear_conns (conn_id, tenant_id) VALUES ($1, $2)
ON CONFLICT (conn_id) DO UPDATE SET tenant_id = excluded.tenant_id`, connID, ev.TenantID)
		return err
	case connection.ClearQueueRequested:
		tenant, err := tenantOf(ctx, tx, "clear_conns", connID, e.Metadata.TenantID, tenants)
		if err != nil {
			return err
		}
		purged, inFlight, err := figures(ev.Purge, ev.InFlight)
		if err != nil {
			return err
		}
		notSent, err := messages(ev.NotSent)
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO clear_reports (tenant_id, conn_id, clear_id, request_revision, status, scope,
broadcast_id, requested_by, reason, requested_at_us, then_action, up_to_seq, purged_count, purged, in_flight_count, in_flight, request,
not_sent_count, not_sent)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
ON CONFLICT (tenant_id, conn_id, clear_id) DO NOTHING`,
			tenant, bareID(connID), ev.ClearID.String(), int64(e.Revision), ClearStatusRequested, scopeKind(ev.Scope),
			idText(ev.Scope.BroadcastID), ev.RequestedBy, ev.Reason, us(ev.RequestedAt), ev.Then.String(), int64(ev.UpToSeq),
			int64(ev.PurgeCount), purged, int64(len(ev.InFlight)), inFlight, string(e.Data), int64(len(ev.NotSent)), notSent)
		return err
	case connection.QueueCleared:
		tenant, err := tenantOf(ctx, tx, "clear_conns", connID, e.Metadata.TenantID, tenants)
		if err != nil {
			return err
		}
		purged, inFlight, err := figures(ev.Purged, ev.InFlight)
		if err != nil {
			return err
		}
		notSent, err := messages(ev.NotSent)
		if err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `UPDATE clear_reports SET status = $4, purged_count = $5, purged = $6, in_flight_count = $7,
in_flight = $8, completed_by = $9, completed_at_us = $10, queue_after = $11, then_action = $12, report = $13,
not_sent_count = $14, not_sent = $15
WHERE tenant_id = $1 AND conn_id = $2 AND clear_id = $3`,
			tenant, bareID(connID), ev.ClearID.String(), ClearStatusCompleted, int64(ev.PurgedCount), purged, int64(ev.InFlightCount),
			inFlight, ev.CompletedBy, us(ev.CompletedAt), ev.QueueAfter.String(), ev.Then.String(), string(e.Data),
			int64(ev.NotSentCount), notSent)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err == nil && n == 0 {
			// A report without its request in this read model would be a broken history; fail
			// the batch so that it shows in the runner's status instead of losing the report.
			return fmt.Errorf("projections: clear %s of %q completed but never requested", ev.ClearID, connID)
		}
		return nil
	}
	return nil
}

// bareID returns the connection id of a key (connection.SplitKey): clear_reports rows are keyed
// by (tenant_id, conn_id) with the id as the tenant knows it; clear_conns by the key.
func bareID(key string) string {
	_, id := connection.SplitKey(key)
	return id
}

// figures encodes a clear's purged ranges and in-flight messages as stored (never null).
func figures(purged []connection.SeqRange, inFlight []connection.InFlightMessage) (string, string, error) {
	if purged == nil {
		purged = []connection.SeqRange{}
	}
	if inFlight == nil {
		inFlight = []connection.InFlightMessage{}
	}
	p, err := json.Marshal(purged)
	if err != nil {
		return "", "", err
	}
	f, err := json.Marshal(inFlight)
	if err != nil {
		return "", "", err
	}
	return string(p), string(f), nil
}

// messages encodes a list of messages as stored (never null).
func messages(ms []connection.InFlightMessage) (string, error) {
	if ms == nil {
		ms = []connection.InFlightMessage{}
	}
	b, err := json.Marshal(ms)
	return string(b), err
}

func scopeKind(s connection.ClearScope) string {
	if s.IsWholeQueue() {
		return "queue"
	}
	return "broadcast"
}

// ClearReport is one clear of a connection, as the clears read model keeps it.
type ClearReport struct {
	TenantID     string
	ConnectionID string
	ClearID      uuid.UUID
	// Status is ClearStatusRequested until QueueCleared is recorded, then ClearStatusCompleted.
	Status string
	Scope  connection.ClearScope
	// RequestRevision is the stream revision of the clear's request.
	RequestRevision uint64
	RequestedBy     string
	Reason          string
	RequestedAt     time.Time
	// Then is what the queue becomes after the clear (keep for requests recorded before it
	// existed).
	Then connection.ClearThen
	// UpToSeq is the request's fence: the last Seq queued before it.
	UpToSeq uint64
	// PurgedCount and Purged are the exact purged set; InFlightCount and InFlight the messages
	// in flight at the request (the request's figures while requested, the report's once
	// completed).
	PurgedCount   uint64
	Purged        []connection.SeqRange
	InFlightCount uint64
	InFlight      []connection.InFlightMessage
	// NotSentCount and NotSent are the messages dispatched but never handed over, which the
	// clear failed not_sent (0 and empty for clears recorded before they existed).
	NotSentCount uint64
	NotSent      []connection.InFlightMessage
	// CompletedBy and CompletedAt are set once completed.
	CompletedBy string
	CompletedAt time.Time
	// QueueAfter is the queue status the clear left (zero until completed, and for reports
	// recorded before it existed).
	QueueAfter connection.QueueStatus
	// Request is the ClearQueueRequested body and Report the QueueCleared body (nil until
	// completed), as recorded; only ClearReport fills them, not ClearReports.
	Request, Report json.RawMessage
}

const clearColumns = `tenant_id, conn_id, clear_id, request_revision, status, scope, broadcast_id, requested_by, reason,
requested_at_us, then_action, up_to_seq, purged_count, purged, in_flight_count, in_flight, completed_by, completed_at_us, queue_after,
not_sent_count, not_sent`

func scanClear(row interface{ Scan(...any) error }, raw bool) (ClearReport, error) {
	var r ClearReport
	var clearID, scope, bid, then, purged, inFlight, after, notSent, request, report string
	var rev, reqAt, upTo, purgedCount, inFlightCount, doneAt, notSentCount int64
	dest := []any{&r.TenantID, &r.ConnectionID, &clearID, &rev, &r.Status, &scope, &bid, &r.RequestedBy, &r.Reason,
		&reqAt, &then, &upTo, &purgedCount, &purged, &inFlightCount, &inFlight, &r.CompletedBy, &doneAt, &after,
		&notSentCount, &notSent}
	if raw {
		dest = append(dest, &request, &report)
	}
	if err := row.Scan(dest...); err != nil {
		return r, err
	}
	var err error
	if r.ClearID, err = uuid.Parse(clearID); err != nil {
		return r, err
	}
	if scope == "broadcast" {
		id, err := parseID(bid)
		if err != nil {
			return r, err
		}
		r.Scope = connection.BroadcastScope(id)
	}
	if err := r.Then.UnmarshalText([]byte(then)); err != nil {
		return r, err
	}
	if err := r.QueueAfter.UnmarshalText([]byte(after)); err != nil {
		return r, err
	}
	if err := json.Unmarshal([]byte(purged), &r.Purged); err != nil {
		return r, err
	}
	if err := json.Unmarshal([]byte(inFlight), &r.InFlight); err != nil {
		return r, err
	}
	if err := json.Unmarshal([]byte(notSent), &r.NotSent); err != nil {
		return r, err
	}
	r.NotSentCount = uint64(notSentCount)
	r.RequestRevision, r.UpToSeq = uint64(rev), uint64(upTo)
	r.PurgedCount, r.InFlightCount = uint64(purgedCount), uint64(inFlightCount)
	r.RequestedAt, r.CompletedAt = fromUS(reqAt), fromUS(doneAt)
	if raw {
		r.Request = json.RawMessage(request)
		if report != "" {
			r.Report = json.RawMessage(report)
		}
	}
	return r, nil
}

// ClearReport returns clear clearID of connection connID of tenant, with its recorded request
// and report bodies; ErrNotFound when unknown, another connection's or another tenant's.
func (*Clears) ClearReport(ctx context.Context, db *DB, tenant, connID string, clearID uuid.UUID) (ClearReport, error) {
	r, err := scanClear(db.QueryRowContext(ctx, `SELECT `+clearColumns+`, request, report FROM clear_reports
WHERE tenant_id = $1 AND conn_id = $2 AND clear_id = $3`, tenant, connID, clearID.String()), true)
	if errors.Is(err, sql.ErrNoRows) {
		return r, fmt.Errorf("projections: clear %s of %q: %w", clearID, connID, ErrNotFound)
	}
	if err != nil {
		return r, fmt.Errorf("projections: clear %s of %q: %w", clearID, connID, err)
	}
	return r, nil
}

// ClearPage is a page of a connection's clears, newest first.
type ClearPage struct {
	Clears []ClearReport
	// NextCursor continues with older clears; "" when this page is the last.
	NextCursor string
}

// ClearReports returns a page of at most limit (default 50, at most 1000) of connection
// connID's clears, newest request first, starting after cursor ("" for the newest; else a
// ClearPage.NextCursor, ErrBadCursor otherwise). Request and Report are not filled. An unknown
// connection or another tenant's gives an empty page: the caller checks the connection.
func (*Clears) ClearReports(ctx context.Context, db *DB, tenant, connID, cursor string, limit int) (ClearPage, error) {
	if limit <= 0 {
		limit = 50
	}
	limit = min(limit, 1000)
	before := int64(-1)
	if cursor != "" {
		v, err := strconv.ParseInt(cursor, 10, 64)
		if err != nil || v < 0 {
			return ClearPage{}, fmt.Errorf("%w: %q", ErrBadCursor, cursor)
		}
		before = v
	}
	q := `SELECT ` + clearColumns + ` FROM clear_reports WHERE tenant_id = $1 AND conn_id = $2`
	args := []any{tenant, connID}
	if before >= 0 {
		q += ` AND request_revision < $3 ORDER BY request_revision DESC LIMIT $4`
		args = append(args, before, limit+1)
	} else {
		q += ` ORDER BY request_revision DESC LIMIT $3`
		args = append(args, limit+1)
	}
	rows, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return ClearPage{}, fmt.Errorf("projections: clears of %q: %w", connID, err)
	}
	defer rows.Close()
	var page ClearPage
	for rows.Next() {
		r, err := scanClear(rows, false)
		if err != nil {
			return ClearPage{}, fmt.Errorf("projections: clears of %q: %w", connID, err)
		}
		page.Clears = append(page.Clears, r)
	}
	if err := rows.Err(); err != nil {
		return ClearPage{}, fmt.Errorf("projections: clears of %q: %w", connID, err)
	}
	if len(page.Clears) > limit {
		page.Clears = page.Clears[:limit]
		page.NextCursor = strconv.FormatUint(page.Clears[limit-1].RequestRevision, 10)
	}
	return page, nil
}

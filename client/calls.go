package client

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Key is an API key as the API lists it (never its secret).
type Key struct {
	ID        string    `json:"id"`
	TenantID  string    `json:"tenant_id"`
	Role      string    `json:"role"`
	Label     string    `json:"label"`
	CreatedBy string    `json:"created_by"`
	CreatedAt time.Time `json:"created_at"`
	RevokedAt time.Time `json:"revoked_at,omitzero"`
}

// CreatedKey is a new key with its secret, which the server shows this once.
type CreatedKey struct {
	Key
	Secret string `json:"secret"`
}

// CreateKey creates a key of role (admin, operator, sender, auditor, analyst) in the caller's
// tenant (POST /v1/keys).
func (c *Client) CreateKey(ctx context.Context, role, label string) (CreatedKey, json.RawMessage, error) {
	var k CreatedKey
	b, err := c.postJSON(ctx, "/v1/keys", map[string]string{"role": role, "label": label}, nil, &k)
	return k, b, err
}

// Keys lists the caller's tenant's keys, revoked ones included (GET /v1/keys).
func (c *Client) Keys(ctx context.Context) ([]Key, json.RawMessage, error) {
	var out struct {
		Keys []Key `json:"keys"`
	}
	b, err := c.get(ctx, "/v1/keys", nil, &out)
	return out.Keys, b, err
}

// RevokeKey revokes key id for reason (may be empty) (DELETE /v1/keys/{id}).
func (c *Client) RevokeKey(ctx context.Context, id, reason string) error {
	body, err := jsonBody(map[string]string{"reason": reason})
	if err != nil {
		return err
	}
	_, err = c.call(ctx, request{method: http.MethodDelete, path: "/v1/keys/" + seg(id), body: body, contentType: "application/json"}, nil)
	return err
}

// Ban is a connection's current ban.
type Ban struct {
	Kind      string    `json:"kind"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	Reason    string    `json:"reason"`
	Since     time.Time `json:"since"`
}

// Card is a connection's card.
type Card struct {
	ID          string `json:"id"`
	TenantID    string `json:"tenant_id"`
	Phone       string `json:"phone"`
	OnBan       string `json:"on_ban"`
	LinkStatus  string `json:"link_status"`
	QueueStatus string `json:"queue_status"`
	Pending     uint64 `json:"pending"`
	InFlight    uint64 `json:"in_flight"`
	Ban         *Ban   `json:"ban,omitempty"`
	// HeldReason says why the queue is held (banned, session_invalid, operator, after_clear, tenant_suspended).
	HeldReason  string `json:"held_reason,omitempty"`
	LastProblem string `json:"last_problem,omitempty"`
	// SendingPolicy is how the connection is paced; DispatchedToday the messages dispatched on
	// its local day, held against SendingPolicy.DailyCap.
	SendingPolicy   SendingPolicy `json:"sending_policy"`
	DispatchedToday int           `json:"dispatched_today"`
}

// SendingPolicy is a connection's sending policy (see docs/operations.md, "Sending policy").
type SendingPolicy struct {
	MinIntervalSeconds int         `json:"min_interval_seconds"`
	JitterSeconds      int         `json:"jitter_seconds"`
	DailyCap           int         `json:"daily_cap"`
	TimeZone           string      `json:"time_zone"`
	QuietHours         *QuietHours `json:"quiet_hours"`
}

// QuietHours is a daily window of local time ("22:00" to "07:00") in which nothing is sent.
type QuietHours struct {
	Start string `json:"start"`
	End   string `json:"end"`
}

// SendingPolicyChange changes the settings it sets (nil fields keep theirs); NoQuietHours
// removes the quiet hours.
type SendingPolicyChange struct {
	MinIntervalSeconds *int
	JitterSeconds      *int
	DailyCap           *int
	TimeZone           *string
	QuietHours         *QuietHours
	NoQuietHours       bool
}

func (ch SendingPolicyChange) body() map[string]any {
	m := map[string]any{}
	if ch.MinIntervalSeconds != nil {
		m["min_interval_seconds"] = *ch.MinIntervalSeconds
	}
	if ch.JitterSeconds != nil {
		m["jitter_seconds"] = *ch.JitterSeconds
	}
	if ch.DailyCap != nil {
		m["daily_cap"] = *ch.DailyCap
	}
	if ch.TimeZone != nil {
		m["time_zone"] = *ch.TimeZone
	}
	if ch.QuietHours != nil {
		m["quiet_hours"] = ch.QuietHours
	} else if ch.NoQuietHours {
		m["quiet_hours"] = nil
	}
	return m
}

// Connections lists the tenant's connection cards (GET /v1/connections).
func (c *Client) Connections(ctx context.Context) ([]Card, json.RawMessage, error) {
	var out struct {
		Connections []Card `json:"connections"`
	}
	b, err := c.get(ctx, "/v1/connections", nil, &out)
	return out.Connections, b, err
}

// RegisterConnection registers phone; id and onBan may be empty for the server's defaults
// (POST /v1/connections).
func (c *Client) RegisterConnection(ctx context.Context, id, phone, onBan string) (Card, json.RawMessage, error) {
	in := map[string]string{"phone": phone}
	if id != "" {
		in["id"] = id
	}
	if onBan != "" {
		in["on_ban"] = onBan
	}
	body, err := jsonBody(in)
	if err != nil {
		return Card{}, nil, err
	}
	var card Card
	b, err := c.cardCommand(ctx, request{method: http.MethodPost, path: "/v1/connections", body: body, contentType: "application/json"}, id, &card)
	return card, b, err
}

// BroadcastQueue is one broadcast's share of a queue.
type BroadcastQueue struct {
	BroadcastID string `json:"broadcast_id"`
	FirstSeq    uint64 `json:"first_seq"`
	LastSeq     uint64 `json:"last_seq"`
	Total       uint64 `json:"total"`
	Pending     uint64 `json:"pending"`
}

// Queue is a connection's queue.
type Queue struct {
	ConnectionID string           `json:"connection_id"`
	Status       string           `json:"status"`
	ClearID      string           `json:"clear_id,omitempty"`
	Pending      uint64           `json:"pending"`
	InFlight     uint64           `json:"in_flight"`
	LastSeq      uint64           `json:"last_seq"`
	Broadcasts   []BroadcastQueue `json:"broadcasts"`
}

// Queue reads connection conn's queue (GET /v1/connections/{id}/queue).
func (c *Client) Queue(ctx context.Context, conn string) (Queue, json.RawMessage, error) {
	var q Queue
	b, err := c.get(ctx, "/v1/connections/"+seg(conn)+"/queue", nil, &q)
	return q, b, err
}

// ClearPreview is what a clear would purge now.
type ClearPreview struct {
	ConnectionID string           `json:"connection_id"`
	Phone        string           `json:"phone"`
	QueueStatus  string           `json:"queue_status"`
	Total        uint64           `json:"total"`
	InFlight     uint64           `json:"in_flight"`
	Broadcasts   []BroadcastQueue `json:"broadcasts"`
	// Confirm tells how to confirm a clear (with Phone as ClearRequest.Confirm).
	Confirm string `json:"confirm"`
}

// ClearPreview reads what a clear of conn would purge (GET …/queue/clear-preview).
func (c *Client) ClearPreview(ctx context.Context, conn string) (ClearPreview, error) {
	var p ClearPreview
	_, err := c.get(ctx, "/v1/connections/"+seg(conn)+"/queue/clear-preview", nil, &p)
	return p, err
}

// ClearRequest asks for a clear of a queue (or of one broadcast's pending messages).
type ClearRequest struct {
	Reason      string `json:"reason"`
	BroadcastID string `json:"broadcast_id,omitempty"`
	// Confirm must be the connection's phone number.
	Confirm string `json:"confirm"`
	// Then is what the queue becomes after the clear: "keep" (the server's default, also for
	// ""), "hold" or "resume".
	Then string `json:"then,omitempty"`
}

// ClearAccepted is the answer to a clear request.
type ClearAccepted struct {
	ClearID      string `json:"clear_id"`
	ConnectionID string `json:"connection_id"`
	Status       string `json:"status"`
}

// Clear requests a clear of conn's queue (POST …/queue/clear). idempotencyKey makes a retry
// safe; empty sends none.
func (c *Client) Clear(ctx context.Context, conn string, r ClearRequest, idempotencyKey string) (ClearAccepted, error) {
	var a ClearAccepted
	_, err := c.postJSON(ctx, "/v1/connections/"+seg(conn)+"/queue/clear", r, map[string]string{"Idempotency-Key": idempotencyKey}, &a)
	return a, err
}

// ClearReport is the exact report of a completed clear (the QueueCleared event).
type ClearReport struct {
	ClearID     string          `json:"clear_id"`
	Scope       json.RawMessage `json:"scope"`
	RequestedBy string          `json:"requested_by"`
	Reason      string          `json:"reason"`
	RequestedAt time.Time       `json:"requested_at"`
	Purged      []struct {
		From uint64 `json:"from"`
		To   uint64 `json:"to"`
	} `json:"purged"`
	PurgedCount   uint64 `json:"purged_count"`
	InFlightCount int    `json:"in_flight_count"`
	// NotSentCount counts messages dispatched but never handed over, failed not_sent by the clear.
	NotSentCount int       `json:"not_sent_count,omitempty"`
	CompletedBy  string    `json:"completed_by"`
	CompletedAt  time.Time `json:"completed_at"`
	// Then is what the clear was asked to leave the queue as; QueueAfter what it left (open or
	// held); both empty in reports recorded before they existed.
	Then       string `json:"then,omitempty"`
	QueueAfter string `json:"queue_after,omitempty"`
}

// ClearStatus is a clear's status; Report is set once Status is "done".
type ClearStatus struct {
	ClearID      string          `json:"clear_id"`
	ConnectionID string          `json:"connection_id"`
	Status       string          `json:"status"`
	Request      json.RawMessage `json:"request,omitempty"`
	Report       *ClearReport    `json:"report,omitempty"`
}

// Done reports whether the clear has completed.
func (s ClearStatus) Done() bool { return s.Status == "done" }

// ClearStatus reads clear clearID of conn (GET …/clears/{clear_id}).
func (c *Client) ClearStatus(ctx context.Context, conn, clearID string) (ClearStatus, json.RawMessage, error) {
	var s ClearStatus
	b, err := c.get(ctx, "/v1/connections/"+seg(conn)+"/clears/"+seg(clearID), nil, &s)
	return s, b, err
}

// ClearPage is a page of a connection's clears, newest first.
type ClearPage struct {
	ConnectionID string `json:"connection_id"`
	Clears       []struct {
		ClearReport
		Status string `json:"status"`
	} `json:"clears"`
	// NextCursor continues with older clears; "" on the last page.
	NextCursor string `json:"next_cursor"`
}

// Clears reads a page of conn's clears, newest first (GET …/clears); cursor "" starts at the
// newest, limit 0 takes the server's default.
func (c *Client) Clears(ctx context.Context, conn, cursor string, limit int) (ClearPage, json.RawMessage, error) {
	q := url.Values{}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var p ClearPage
	b, err := c.get(ctx, "/v1/connections/"+seg(conn)+"/clears", q, &p)
	return p, b, err
}

// Hold holds conn's queue with an optional note (POST …/queue/hold) and returns the card.
func (c *Client) Hold(ctx context.Context, conn, note string) (Card, json.RawMessage, error) {
	body, err := jsonBody(map[string]string{"note": note})
	if err != nil {
		return Card{}, nil, err
	}
	var card Card
	b, err := c.cardCommand(ctx, request{method: http.MethodPost, path: "/v1/connections/" + seg(conn) + "/queue/hold", body: body, contentType: "application/json"}, conn, &card)
	return card, b, err
}

// Resume resumes conn's held queue (POST …/queue/resume) and returns the card.
func (c *Client) Resume(ctx context.Context, conn, note string) (Card, json.RawMessage, error) {
	body, err := jsonBody(map[string]string{"note": note})
	if err != nil {
		return Card{}, nil, err
	}
	var card Card
	b, err := c.cardCommand(ctx, request{method: http.MethodPost, path: "/v1/connections/" + seg(conn) + "/queue/resume", body: body, contentType: "application/json"}, conn, &card)
	return card, b, err
}

// MessageAccepted is the answer to a queued message.
type MessageAccepted struct {
	MessageID    string `json:"message_id"`
	ConnectionID string `json:"connection_id"`
}

// Send queues one message to recipient (POST …/messages).
func (c *Client) Send(ctx context.Context, conn, recipient, text, idempotencyKey string) (MessageAccepted, json.RawMessage, error) {
	var a MessageAccepted
	b, err := c.postJSON(ctx, "/v1/connections/"+seg(conn)+"/messages",
		map[string]string{"recipient": recipient, "text": text}, map[string]string{"Idempotency-Key": idempotencyKey}, &a)
	return a, b, err
}

// BroadcastAccepted is the answer to a broadcast.
type BroadcastAccepted struct {
	BroadcastID  string `json:"broadcast_id"`
	ConnectionID string `json:"connection_id"`
	Count        int    `json:"count"`
	// NotOnWhatsApp lists the recipients left out by check_recipients (absent without it).
	NotOnWhatsApp []string `json:"not_on_whatsapp,omitempty"`
}

// ImportBroadcast uploads a CSV of phone numbers (one a line, first column, optional header)
// as a broadcast of text (POST …/broadcasts, text/csv). size is csv's length when known (> 0),
// sent as Content-Length; otherwise the body is chunked.
func (c *Client) ImportBroadcast(ctx context.Context, conn, text string, csv io.Reader, size int64, idempotencyKey string) (BroadcastAccepted, json.RawMessage, error) {
	var a BroadcastAccepted
	b, err := c.call(ctx, request{
		method: http.MethodPost, path: "/v1/connections/" + seg(conn) + "/broadcasts",
		query: url.Values{"text": {text}}, body: csv, length: size, contentType: "text/csv",
		header: map[string]string{"Idempotency-Key": idempotencyKey},
	}, &a)
	return a, b, err
}

// BroadcastProgress is a broadcast's counts by status.
type BroadcastProgress struct {
	BroadcastID  string `json:"broadcast_id"`
	ConnectionID string `json:"connection_id"`
	Count        int    `json:"count"`
	Queued       int    `json:"queued"`
	Dispatched   int    `json:"dispatched"`
	Sent         int    `json:"sent"`
	Delivered    int    `json:"delivered"`
	Read         int    `json:"read"`
	Failed       int    `json:"failed"`
	Purged       int    `json:"purged"`
	Expired      int    `json:"expired"`
	Unknown      int    `json:"unknown"`
}

// Broadcast reads broadcast id's progress (GET /v1/broadcasts/{id}).
func (c *Client) Broadcast(ctx context.Context, id string) (BroadcastProgress, json.RawMessage, error) {
	var p BroadcastProgress
	b, err := c.get(ctx, "/v1/broadcasts/"+seg(id), nil, &p)
	return p, b, err
}

// AuditFilter selects audit entries; empty fields select everything.
type AuditFilter struct {
	Connection, Type, Actor string
	// From (inclusive) and To (exclusive) are RFC 3339 times or days.
	From, To string
}

func (f AuditFilter) query() url.Values {
	q := url.Values{}
	for k, v := range map[string]string{"connection": f.Connection, "type": f.Type, "actor": f.Actor, "from": f.From, "to": f.To} {
		if v != "" {
			q.Set(k, v)
		}
	}
	return q
}

// AuditPage is one page of the audit trail; NextCursor is empty on the last page.
type AuditPage struct {
	Entries    []json.RawMessage `json:"entries"`
	NextCursor string            `json:"next_cursor"`
}

// AuditPage reads the page of at most limit entries after cursor (GET /v1/audit).
func (c *Client) AuditPage(ctx context.Context, f AuditFilter, cursor string, limit int) (AuditPage, error) {
	q := f.query()
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var p AuditPage
	_, err := c.get(ctx, "/v1/audit", q, &p)
	return p, err
}

// AuditVerification is the result of recomputing the tenant's audit hash chain.
type AuditVerification struct {
	OK          bool   `json:"ok"`
	Checked     int    `json:"checked"`
	FirstBadSeq uint64 `json:"first_bad_seq,omitempty"`
	Problem     string `json:"problem,omitempty"`
	Head        string `json:"head"`
}

// VerifyAudit recomputes the tenant's audit hash chain (GET /v1/audit/verify).
func (c *Client) VerifyAudit(ctx context.Context) (AuditVerification, json.RawMessage, error) {
	var v AuditVerification
	b, err := c.get(ctx, "/v1/audit/verify", nil, &v)
	return v, b, err
}

// CheckpointPage is one page of the tenant's signed audit checkpoints, newest first.
type CheckpointPage struct {
	Checkpoints []json.RawMessage `json:"checkpoints"`
	NextCursor  string            `json:"next_cursor"`
}

// AuditCheckpoints reads the page of at most limit checkpoints older than cursor ("" for the
// newest) (GET /v1/audit/checkpoints).
func (c *Client) AuditCheckpoints(ctx context.Context, cursor string, limit int) (CheckpointPage, error) {
	q := url.Values{}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var p CheckpointPage
	_, err := c.get(ctx, "/v1/audit/checkpoints", q, &p)
	return p, err
}

// AuditEntry is one entry of the audit trail.
type AuditEntry struct {
	Seq          uint64          `json:"seq"`
	EventID      string          `json:"event_id"`
	Stream       string          `json:"stream"`
	ConnectionID string          `json:"connection_id"`
	EventType    string          `json:"event_type"`
	Actor        string          `json:"actor"`
	Reason       string          `json:"reason"`
	At           time.Time       `json:"at"`
	Details      json.RawMessage `json:"details"`
	PrevHash     string          `json:"prev_hash"`
	Hash         string          `json:"hash"`
}

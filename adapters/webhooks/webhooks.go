// Package webhooks delivers waqueue's integration events (projections/integration) to HTTP
// endpoints that tenants register, signed, retried with exponential backoff, at least once, with
// a delivery log.
//
// # Why an outbox projection
//
// Deliveries are fed by the event log itself, not by the broker: Outbox is a
// projections.Projection that turns each domain event into its integration event
// (integration.Translate, the same JSON the broker carries) and writes one row per subscribed
// webhook into webhook_deliveries, in the same read-model transaction as its checkpoint. An event
// is therefore either not yet seen (and will be, after a crash) or durably in the outbox; no
// broker message can be lost between the two, and the in-process GoChannel's lack of persistence
// does not matter. A webhook receives the events recorded after its registration.
//
// # Delivery
//
// Worker sends the due rows: POST of the integration event's JSON with the headers
// Waqueue-Event-Id, Waqueue-Event-Type and Waqueue-Signature ("t=<unix>,v1=<hex>", see Sign).
// A 2xx answer marks the row delivered; anything else (another status — a redirect is never
// followed —, a refused address, a network error, a timeout) is logged as an attempt, with the
// status code and an error class only (see the Error* constants: never the receiver's body or
// an internal error text, which would make the log an oracle for probing the network), and the
// row is retried after Backoff·2^(attempts-1), capped at MaxBackoff, for ever: a receiver that
// is down loses nothing, and a restarted worker resumes from the rows. A row is claimed
// (claimed_until) before it is sent, so several workers do not send it at once; a crash between the send and the bookkeeping resends it (at least once: receivers dedupe on
// Waqueue-Event-Id, the integration event id).
//
// # Delivery log
//
// A webhook's deliveries are numbered 1, 2, 3… in the order of its events (Delivery.Seq, the
// API's delivery id and the log's cursor). The numbers are the webhook's own: the table's key,
// shared by every tenant's deliveries, would show a tenant how many deliveries the others got
// between two of its own (G9), so it never leaves the package.
//
// # Egress
//
// Webhook URLs are chosen by tenants, so the node must not become their way into the operator's
// network (SSRF). Egress refuses loopback, private, link-local, cloud-metadata, multicast,
// CGNAT and other non-public addresses, at registration and at every connection (after DNS
// resolution, on the address actually dialled), unless the operator allows them
// (EgressConfig.AllowPrivate, AllowCIDRs).
package webhooks

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/projections"
	"github.com/waqueue/waqueue/projections/integration"
)

// Header names of a delivery.
const (
	HeaderSignature = "Waqueue-Signature"
	HeaderEventID   = "Waqueue-Event-Id"
	HeaderEventType = "Waqueue-Event-Type"
)

// DefaultPageSize is the number of deliveries one Deliveries call returns.
const DefaultPageSize = 50

// Errors. Match with errors.Is.
var (
	// ErrNotFound: no such webhook in the tenant (another tenant's is indistinguishable, G9).
	ErrNotFound = errors.New("webhooks: webhook not found")
	// ErrInvalid: a registration with a bad URL or event types (*InvalidError says which).
	ErrInvalid = errors.New("webhooks: invalid webhook")
	// ErrBadSignature: Verify refused a signature.
	ErrBadSignature = errors.New("webhooks: bad signature")
)

// InvalidError reports a refused registration field.
type InvalidError struct {
	Field, Value, Reason string
	// Err is the cause, if any (an *EgressError for a refused address).
	Err error
}

func (e *InvalidError) Error() string {
	return fmt.Sprintf("webhooks: invalid %s %q: %s", e.Field, e.Value, e.Reason)
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *InvalidError) Is(target error) bool { return target == ErrInvalid }

// Unwrap returns the cause.
func (e *InvalidError) Unwrap() error { return e.Err }

// Webhook is a registered endpoint. Its secret is never returned after Register.
type Webhook struct {
	ID         string
	TenantID   string
	URL        string
	EventTypes []string
	CreatedAt  time.Time
}

// Attempt is one try of a delivery.
type Attempt struct {
	N  int
	At time.Time
	// StatusCode is the receiver's HTTP status; 0 when no answer came (Error says why).
	StatusCode int
	// Error is the failure's class (one of the Error* constants), empty on success.
	Error string
}

// Delivery is one event to deliver to one webhook, with its log.
type Delivery struct {
	// Seq is the delivery's number within its webhook: 1 for its first delivery, then 2, 3…
	// in the order of the events, without gaps. It says nothing about other webhooks or
	// tenants (G9); the API shows it as the delivery's id.
	Seq       int64
	WebhookID string
	EventID   string
	EventType string
	CreatedAt time.Time
	// Attempts made so far, oldest first.
	Attempts []Attempt
	// LastStatus and LastError are those of the last attempt.
	LastStatus int
	LastError  string
	// NextAttemptAt is when the next attempt is due; zero once delivered.
	NextAttemptAt time.Time
	// DeliveredAt is when a 2xx answer came; zero while pending.
	DeliveredAt time.Time
}

// Service registers, lists and deletes webhooks and reads their delivery logs; it is the Go API
// the HTTP layer mounts. Every call is scoped to a tenant.
type Service struct {
	db     *projections.DB
	now    func() time.Time
	rand   io.Reader
	egress *Egress
}

// NewService returns a Service over db (migrated with Migrate). now is the clock (nil: the wall
// clock, UTC). egress is the policy registrations are checked against (nil: public addresses
// only, NewEgress(EgressConfig{})); give the Worker the same policy.
func NewService(db *projections.DB, now func() time.Time, egress *Egress) (*Service, error) {
	if db == nil {
		return nil, errors.New("webhooks: NewService: nil db")
	}
	if now == nil {
		now = func() time.Time { return time.Now().UTC() }
	}
	if egress == nil {
		egress = NewEgress(EgressConfig{})
	}
	return &Service{db: db, now: now, rand: rand.Reader, egress: egress}, nil
}

// Register registers url for the given integration event types in tenant and returns the
// webhook's id and its signing secret. The secret is shown only here: store it.
// url must be an absolute http(s) URL without credentials whose host the egress policy allows
// (a literal address by its class, a name by every address it resolves to now; see
// Egress.CheckURL); types must be non-empty and integration types. A refused URL is an
// *InvalidError of field "url" (wrapping the *EgressError when the address was refused).
func (s *Service) Register(ctx context.Context, tenant, rawURL string, types []string) (id, secret string, err error) {
	if tenant == "" {
		return "", "", &InvalidError{Field: "tenant", Reason: "empty"}
	}
	u, err := s.egress.CheckURL(ctx, rawURL)
	if err != nil {
		var inv *InvalidError
		var eg *EgressError
		switch {
		case errors.As(err, &inv):
			return "", "", inv
		case errors.As(err, &eg):
			return "", "", &InvalidError{Field: "url", Value: rawURL, Reason: "the host is or resolves to a non-public address (" + eg.Class + "); the operator's egress policy refuses it", Err: eg}
		default:
			return "", "", &InvalidError{Field: "url", Value: rawURL, Reason: "the host does not resolve", Err: err}
		}
	}
	if len(types) == 0 {
		return "", "", &InvalidError{Field: "event_types", Reason: "at least one event type is required"}
	}
	seen := map[string]bool{}
	var clean []string
	for _, t := range types {
		if !integration.IsKnownType(t) {
			return "", "", &InvalidError{Field: "event_types", Value: t, Reason: "unknown integration event type"}
		}
		if !seen[t] {
			seen[t] = true
			clean = append(clean, t)
		}
	}
	raw := make([]byte, 32)
	if _, err := io.ReadFull(s.rand, raw); err != nil {
		return "", "", fmt.Errorf("webhooks: secret: %w", err)
	}
	secret = "whsec_" + hex.EncodeToString(raw)
	id = uuid.NewString()
	_, err = s.db.ExecContext(ctx, `INSERT INTO webhooks (id, tenant_id, url, event_types, secret, created_at_us) VALUES ($1, $2, $3, $4, $5, $6)`,
		id, tenant, u.String(), strings.Join(clean, ","), secret, s.now().UnixMicro())
	if err != nil {
		return "", "", fmt.Errorf("webhooks: register: %w", err)
	}
	return id, secret, nil
}

// List returns tenant's webhooks, oldest first.
func (s *Service) List(ctx context.Context, tenant string) ([]Webhook, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, tenant_id, url, event_types, created_at_us FROM webhooks
WHERE tenant_id = $1 AND deleted_at_us = 0 ORDER BY created_at_us, id`, tenant)
	if err != nil {
		return nil, fmt.Errorf("webhooks: list: %w", err)
	}
	defer rows.Close()
	var out []Webhook
	for rows.Next() {
		var w Webhook
		var types string
		var created int64
		if err := rows.Scan(&w.ID, &w.TenantID, &w.URL, &types, &created); err != nil {
			return nil, fmt.Errorf("webhooks: list: %w", err)
		}
		w.EventTypes, w.CreatedAt = strings.Split(types, ","), time.UnixMicro(created).UTC()
		out = append(out, w)
	}
	return out, rows.Err()
}

// Delete removes tenant's webhook id: nothing more is delivered to it (pending deliveries
// stop); its delivery log stays readable. An unknown id is ErrNotFound.
func (s *Service) Delete(ctx context.Context, tenant, id string) error {
	res, err := s.db.ExecContext(ctx, `UPDATE webhooks SET deleted_at_us = $1 WHERE id = $2 AND tenant_id = $3 AND deleted_at_us = 0`,
		s.now().UnixMicro(), id, tenant)
	if err != nil {
		return fmt.Errorf("webhooks: delete %s: %w", id, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("webhooks: delete %s: %w", id, err)
	} else if n == 0 {
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return nil
}

// Deliveries returns a page of the delivery log of tenant's webhook (deleted ones included),
// newest first (by Seq), starting after cursor ("" for the first page), and the cursor of the
// next page ("" when there is none). A cursor is the Seq of the previous page's last delivery,
// in decimal, so pages are stable while new deliveries arrive; a malformed one is ErrInvalid.
func (s *Service) Deliveries(ctx context.Context, tenant, webhookID, cursor string) ([]Delivery, string, error) {
	var owner string
	err := s.db.QueryRowContext(ctx, `SELECT tenant_id FROM webhooks WHERE id = $1`, webhookID).Scan(&owner)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && owner != tenant) {
		return nil, "", fmt.Errorf("%w: %s", ErrNotFound, webhookID)
	}
	if err != nil {
		return nil, "", fmt.Errorf("webhooks: deliveries of %s: %w", webhookID, err)
	}
	before := int64(1<<63 - 1)
	if cursor != "" {
		if before, err = strconv.ParseInt(cursor, 10, 64); err != nil || before <= 0 {
			return nil, "", &InvalidError{Field: "cursor", Value: cursor, Reason: "not a cursor of this API"}
		}
	}
	rows, err := s.db.QueryContext(ctx, `SELECT id, seq, event_id, event_type, created_at_us, attempts, next_attempt_at_us, last_status, last_error, delivered_at_us
FROM webhook_deliveries WHERE webhook_id = $1 AND tenant_id = $2 AND seq < $3 ORDER BY seq DESC LIMIT $4`,
		webhookID, tenant, before, DefaultPageSize+1)
	if err != nil {
		return nil, "", fmt.Errorf("webhooks: deliveries of %s: %w", webhookID, err)
	}
	var (
		out    []Delivery
		rowIDs []int64 // the table's ids, which key the attempts and are never shown
	)
	for rows.Next() {
		d := Delivery{WebhookID: webhookID}
		var rowID, created, next, delivered int64
		var attempts int
		if err := rows.Scan(&rowID, &d.Seq, &d.EventID, &d.EventType, &created, &attempts, &next, &d.LastStatus, &d.LastError, &delivered); err != nil {
			rows.Close()
			return nil, "", fmt.Errorf("webhooks: deliveries of %s: %w", webhookID, err)
		}
		d.CreatedAt = fromUS(created)
		if delivered != 0 {
			d.DeliveredAt = fromUS(delivered)
		} else {
			d.NextAttemptAt = fromUS(next)
		}
		out, rowIDs = append(out, d), append(rowIDs, rowID)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, "", fmt.Errorf("webhooks: deliveries of %s: %w", webhookID, err)
	}
	next := ""
	if len(out) > DefaultPageSize {
		out = out[:DefaultPageSize]
		next = strconv.FormatInt(out[len(out)-1].Seq, 10)
	}
	for i := range out {
		if out[i].Attempts, err = s.attempts(ctx, rowIDs[i]); err != nil {
			return nil, "", fmt.Errorf("webhooks: delivery %s/%d: %w", webhookID, out[i].Seq, err)
		}
	}
	return out, next, nil
}

// attempts returns the attempts of the delivery whose table id is rowID, oldest first.
func (s *Service) attempts(ctx context.Context, rowID int64) ([]Attempt, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT attempt, at_us, status_code, error FROM webhook_attempts WHERE delivery_id = $1 ORDER BY attempt`, rowID)
	if err != nil {
		return nil, fmt.Errorf("attempts: %w", err)
	}
	defer rows.Close()
	var out []Attempt
	for rows.Next() {
		var a Attempt
		var at int64
		if err := rows.Scan(&a.N, &at, &a.StatusCode, &a.Error); err != nil {
			return nil, fmt.Errorf("attempts: %w", err)
		}
		a.At = fromUS(at)
		out = append(out, a)
	}
	return out, rows.Err()
}

func fromUS(v int64) time.Time { return time.UnixMicro(v).UTC() }

// Sign returns the Waqueue-Signature header value of body sent at t with secret:
// "t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<unix seconds>.<body>")>".
func Sign(secret string, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac(secret, ts, body))
}

func mac(secret, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts))
	m.Write([]byte("."))
	m.Write(body)
	return m.Sum(nil)
}

// Verify checks a Waqueue-Signature header against body and secret, and that its time is within
// tolerance of now (replay protection; tolerance <= 0 skips that check). Receivers use it; any
// failure is ErrBadSignature.
func Verify(secret, header string, body []byte, now time.Time, tolerance time.Duration) error {
	var ts, sig string
	for _, part := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(part, "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sig = v
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || sig == "" {
		return fmt.Errorf("%w: malformed header %q", ErrBadSignature, header)
	}
	got, err := hex.DecodeString(sig)
	if err != nil || !hmac.Equal(got, mac(secret, ts, body)) {
		return fmt.Errorf("%w: signature mismatch", ErrBadSignature)
	}
	if tolerance > 0 {
		if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
			return fmt.Errorf("%w: timestamp %d outside tolerance %s", ErrBadSignature, sec, tolerance)
		}
	}
	return nil
}

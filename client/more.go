package client

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// NewIdempotencyKey returns a random Idempotency-Key (32 hex digits). Send the same key again
// with the same request to retry safely: the server queues nothing twice and answers the
// original. The same key with another request is the problem idempotency_key_reused.
func NewIdempotencyKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Build names the server's build (GET /healthz's "build").
type Build struct {
	Version   string `json:"version"`
	Revision  string `json:"revision,omitempty"`
	Time      string `json:"time,omitempty"`
	Modified  bool   `json:"modified"`
	GoVersion string `json:"go_version"`
}

// Health is GET /healthz's answer.
type Health struct {
	Status string `json:"status"`
	Build  Build  `json:"build"`
}

// Health reads liveness and the build (GET /healthz; no key needed).
func (c *Client) Health(ctx context.Context) (Health, error) {
	var h Health
	_, err := c.get(ctx, "/healthz", nil, &h)
	return h, err
}

// Readiness is GET /readyz's answer: which component is unhealthy, never why.
type Readiness struct {
	Status     string            `json:"status"`
	Components map[string]string `json:"components"`
}

// Ready reads readiness (GET /readyz). A server that is not ready answers 503 with the same
// document: Ready returns it with Status "not_ready" and a nil error.
func (c *Client) Ready(ctx context.Context) (Readiness, error) {
	var r Readiness
	_, err := c.get(ctx, "/readyz", nil, &r)
	var se *StatusError
	if errors.As(err, &se) && se.Status == http.StatusServiceUnavailable && json.Unmarshal([]byte(se.Body), &r) == nil && r.Status != "" {
		return r, nil
	}
	return r, err
}

// OpenAPI returns the server's OpenAPI document (GET /v1/openapi.yaml).
func (c *Client) OpenAPI(ctx context.Context) ([]byte, error) {
	return c.raw(ctx, request{method: http.MethodGet, path: "/v1/openapi.yaml"})
}

// Connection reads one connection's card (GET /v1/connections/{id}).
func (c *Client) Connection(ctx context.Context, id string) (Card, error) {
	var card Card
	_, err := c.get(ctx, "/v1/connections/"+seg(id), nil, &card)
	return card, err
}

// QRCode is a QR pairing's current code.
type QRCode struct {
	ConnectionID string `json:"connection_id"`
	Code         string `json:"code"`
	Running      bool   `json:"running"`
}

// StartPairingQR starts a QR pairing of connection id, or joins the one running, and returns
// its first code (POST …/pairing/qr). Render Code as a QR code, or use PairingQRPNG.
func (c *Client) StartPairingQR(ctx context.Context, id string) (QRCode, error) {
	var q QRCode
	_, err := c.call(ctx, request{method: http.MethodPost, path: "/v1/connections/" + seg(id) + "/pairing/qr", header: map[string]string{"Accept": "application/json"}}, &q)
	return q, err
}

// PairingQR reads the latest code of the pairing StartPairingQR started (GET …/pairing/qr).
func (c *Client) PairingQR(ctx context.Context, id string) (QRCode, error) {
	var q QRCode
	_, err := c.call(ctx, request{method: http.MethodGet, path: "/v1/connections/" + seg(id) + "/pairing/qr", header: map[string]string{"Accept": "application/json"}}, &q)
	return q, err
}

// PairingQRPNG reads the latest code as a PNG image (GET …/pairing/qr, Accept: image/png).
func (c *Client) PairingQRPNG(ctx context.Context, id string) ([]byte, error) {
	return c.raw(ctx, request{method: http.MethodGet, path: "/v1/connections/" + seg(id) + "/pairing/qr", header: map[string]string{"Accept": "image/png"}})
}

// PhonePairing is the code to type into the phone.
type PhonePairing struct {
	ConnectionID string `json:"connection_id"`
	Phone        string `json:"phone"`
	Code         string `json:"code"`
}

// PairPhone pairs connection id by phone number (empty: the connection's own number) and
// returns the code to type into the phone (POST …/pairing/phone).
func (c *Client) PairPhone(ctx context.Context, id, phone string) (PhonePairing, error) {
	in := map[string]string{}
	if phone != "" {
		in["phone"] = phone
	}
	var p PhonePairing
	_, err := c.postJSON(ctx, "/v1/connections/"+seg(id)+"/pairing/phone", in, nil, &p)
	return p, err
}

// Message is one message's status and history.
type Message struct {
	ID           string `json:"id"`
	ConnectionID string `json:"connection_id"`
	Seq          uint64 `json:"seq"`
	BroadcastID  string `json:"broadcast_id,omitempty"`
	Recipient    string `json:"recipient"`
	Status       string `json:"status"`
	History      []struct {
		Status string    `json:"status"`
		At     time.Time `json:"at"`
	} `json:"history"`
	ClearID     string `json:"clear_id,omitempty"`
	FailureCode string `json:"failure_code,omitempty"`
}

// Message reads message id (GET /v1/messages/{id}).
func (c *Client) Message(ctx context.Context, id string) (Message, error) {
	var m Message
	_, err := c.get(ctx, "/v1/messages/"+seg(id), nil, &m)
	return m, err
}

// HistoryEvent is one event of a connection's stream.
type HistoryEvent struct {
	Revision   uint64          `json:"revision"`
	Position   string          `json:"position"`
	ID         string          `json:"id"`
	Type       string          `json:"type"`
	RecordedAt time.Time       `json:"recorded_at"`
	Actor      string          `json:"actor"`
	Data       json.RawMessage `json:"data"`
}

// HistoryPage is one page of a connection's events; NextCursor is empty on the last page.
type HistoryPage struct {
	ConnectionID string         `json:"connection_id"`
	Events       []HistoryEvent `json:"events"`
	NextCursor   string         `json:"next_cursor"`
}

// HistoryPage reads at most limit (0: the server's default) events of connection conn from
// cursor ("" for the first) (GET …/history).
func (c *Client) HistoryPage(ctx context.Context, conn, cursor string, limit int) (HistoryPage, error) {
	var p HistoryPage
	_, err := c.get(ctx, "/v1/connections/"+seg(conn)+"/history", pageQuery(nil, cursor, limit), &p)
	return p, err
}

// History iterates over every event of connection conn, oldest first, reading pages of limit
// events as the loop goes. An error ends the iteration with (zero, err).
func (c *Client) History(ctx context.Context, conn string, limit int) iter.Seq2[HistoryEvent, error] {
	return pages(func(cursor string) ([]HistoryEvent, string, error) {
		p, err := c.HistoryPage(ctx, conn, cursor, limit)
		return p.Events, p.NextCursor, err
	})
}

// AuditEntries iterates over the audit entries f selects, oldest first, reading pages of limit
// entries (GET /v1/audit). An error ends the iteration with (zero, err).
func (c *Client) AuditEntries(ctx context.Context, f AuditFilter, limit int) iter.Seq2[AuditEntry, error] {
	return pages(func(cursor string) ([]AuditEntry, string, error) {
		p, err := c.AuditPage(ctx, f, cursor, limit)
		if err != nil {
			return nil, "", err
		}
		out := make([]AuditEntry, len(p.Entries))
		for i, raw := range p.Entries {
			if err := json.Unmarshal(raw, &out[i]); err != nil {
				return nil, "", fmt.Errorf("client: decode audit entry: %w", err)
			}
		}
		return out, p.NextCursor, nil
	})
}

// Checkpoints iterates over the tenant's signed audit checkpoints, newest first, each as the
// server sent it (GET /v1/audit/checkpoints).
func (c *Client) Checkpoints(ctx context.Context, limit int) iter.Seq2[json.RawMessage, error] {
	return pages(func(cursor string) ([]json.RawMessage, string, error) {
		p, err := c.AuditCheckpoints(ctx, cursor, limit)
		return p.Checkpoints, p.NextCursor, err
	})
}

// pages turns a page reader into an iterator; it stops at an empty next cursor or an empty
// page, and refuses a cursor that does not move (a server bug would otherwise loop forever).
func pages[T any](read func(cursor string) ([]T, string, error)) iter.Seq2[T, error] {
	return func(yield func(T, error) bool) {
		cursor := ""
		for {
			items, next, err := read(cursor)
			if err != nil {
				var zero T
				yield(zero, err)
				return
			}
			for _, it := range items {
				if !yield(it, nil) {
					return
				}
			}
			if next == "" || len(items) == 0 {
				return
			}
			if next == cursor {
				var zero T
				yield(zero, fmt.Errorf("client: the server answered the same cursor %q again", next))
				return
			}
			cursor = next
		}
	}
}

func pageQuery(q url.Values, cursor string, limit int) url.Values {
	if q == nil {
		q = url.Values{}
	}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	return q
}

// AnalyticsDaily reads the daily counts per connection, one JSON object per day and
// connection; conn, from and to (YYYY-MM-DD) may be empty (GET /v1/analytics/daily).
func (c *Client) AnalyticsDaily(ctx context.Context, conn, from, to string) ([]json.RawMessage, error) {
	q := url.Values{}
	for k, v := range map[string]string{"connection": conn, "from": from, "to": to} {
		if v != "" {
			q.Set(k, v)
		}
	}
	var out struct {
		Days []json.RawMessage `json:"days"`
	}
	_, err := c.get(ctx, "/v1/analytics/daily", q, &out)
	return out.Days, err
}

// ChangeKeyRole changes key id's role (PATCH /v1/keys/{id}).
func (c *Client) ChangeKeyRole(ctx context.Context, id, role string) (Key, error) {
	body, err := jsonBody(map[string]string{"role": role})
	if err != nil {
		return Key{}, err
	}
	var k Key
	_, err = c.call(ctx, request{method: http.MethodPatch, path: "/v1/keys/" + seg(id), body: body, contentType: "application/json"}, &k)
	return k, err
}

// BrokerToken is a short-lived token that commands sent through NATS carry instead of the key.
type BrokerToken struct {
	Token                 string    `json:"token"`
	ExpiresAt             time.Time `json:"expires_at"`
	TenantID              string    `json:"tenant_id"`
	KeyID                 string    `json:"key_id"`
	CommandsSubjectPrefix string    `json:"commands_subject_prefix"`
}

// MintBrokerToken mints a broker token valid for ttl (0: the server's default, 15m)
// (POST /v1/broker/tokens).
func (c *Client) MintBrokerToken(ctx context.Context, ttl time.Duration) (BrokerToken, error) {
	in := map[string]string{}
	if ttl > 0 {
		in["ttl"] = ttl.String()
	}
	var t BrokerToken
	_, err := c.postJSON(ctx, "/v1/broker/tokens", in, nil, &t)
	return t, err
}

// AdminHealth reads every health check with its internal detail (GET /v1/admin/health; an
// admin key of the platform tenant only).
func (c *Client) AdminHealth(ctx context.Context) (json.RawMessage, error) {
	return c.get(ctx, "/v1/admin/health", nil, nil)
}

// Webhook is a registered webhook (never its secret).
type Webhook struct {
	ID         string    `json:"id"`
	URL        string    `json:"url"`
	EventTypes []string  `json:"event_types"`
	CreatedAt  time.Time `json:"created_at"`
}

// CreatedWebhook is a new webhook with its signing secret, shown this once.
type CreatedWebhook struct {
	Webhook
	Secret string `json:"secret"`
}

// RegisterWebhook registers url for the integration event types (POST /v1/webhooks).
func (c *Client) RegisterWebhook(ctx context.Context, url string, eventTypes ...string) (CreatedWebhook, error) {
	var w CreatedWebhook
	_, err := c.postJSON(ctx, "/v1/webhooks", map[string]any{"url": url, "event_types": eventTypes}, nil, &w)
	return w, err
}

// Webhooks lists the tenant's webhooks (GET /v1/webhooks).
func (c *Client) Webhooks(ctx context.Context) ([]Webhook, error) {
	var out struct {
		Webhooks []Webhook `json:"webhooks"`
	}
	_, err := c.get(ctx, "/v1/webhooks", nil, &out)
	return out.Webhooks, err
}

// DeleteWebhook deletes webhook id (DELETE /v1/webhooks/{id}).
func (c *Client) DeleteWebhook(ctx context.Context, id string) error {
	_, err := c.call(ctx, request{method: http.MethodDelete, path: "/v1/webhooks/" + seg(id)}, nil)
	return err
}

// WebhookDelivery is one event's delivery to a webhook, with its attempts.
type WebhookDelivery struct {
	// ID is the delivery's number within its webhook: 1, 2, 3… in the order of the events.
	ID        int64     `json:"id"`
	EventID   string    `json:"event_id"`
	EventType string    `json:"event_type"`
	CreatedAt time.Time `json:"created_at"`
	Attempts  []struct {
		N          int       `json:"n"`
		At         time.Time `json:"at"`
		StatusCode int       `json:"status_code"`
		Error      string    `json:"error,omitempty"`
	} `json:"attempts"`
	LastStatus    int        `json:"last_status"`
	LastError     string     `json:"last_error,omitempty"`
	NextAttemptAt *time.Time `json:"next_attempt_at"`
	DeliveredAt   *time.Time `json:"delivered_at"`
}

// WebhookDeliveries iterates over webhook id's delivery log, newest first
// (GET /v1/webhooks/{id}/deliveries).
func (c *Client) WebhookDeliveries(ctx context.Context, id string) iter.Seq2[WebhookDelivery, error] {
	return pages(func(cursor string) ([]WebhookDelivery, string, error) {
		var p struct {
			Deliveries []WebhookDelivery `json:"deliveries"`
			NextCursor string            `json:"next_cursor"`
		}
		_, err := c.get(ctx, "/v1/webhooks/"+seg(id)+"/deliveries", pageQuery(nil, cursor, 0), &p)
		return p.Deliveries, p.NextCursor, err
	})
}

// SimulatorBan bans the simulated number of connection id: kind "temporary" (for expiresIn;
// 0: the server's default, 1h) or "permanent" (POST …/simulator/ban; simulator mode only).
func (c *Client) SimulatorBan(ctx context.Context, id, kind string, expiresIn time.Duration) (json.RawMessage, error) {
	in := map[string]string{"kind": kind}
	if expiresIn > 0 {
		in["expires_in"] = expiresIn.String()
	}
	return c.postJSON(ctx, "/v1/connections/"+seg(id)+"/simulator/ban", in, nil, nil)
}

// SimulatorLift lifts the simulated ban of connection id (POST …/simulator/lift).
func (c *Client) SimulatorLift(ctx context.Context, id string) (json.RawMessage, error) {
	return c.call(ctx, request{method: http.MethodPost, path: "/v1/connections/" + seg(id) + "/simulator/lift"}, nil)
}

// SimulatorLogout logs the simulated session of connection id out (POST …/simulator/logout).
func (c *Client) SimulatorLogout(ctx context.Context, id string) (json.RawMessage, error) {
	return c.call(ctx, request{method: http.MethodPost, path: "/v1/connections/" + seg(id) + "/simulator/logout"}, nil)
}

// Webhook request headers.
const (
	HeaderEventID   = "Waqueue-Event-Id"
	HeaderEventType = "Waqueue-Event-Type"
	HeaderSignature = "Waqueue-Signature"
)

// ErrBadSignature is the error VerifyWebhookSignature returns (wrapped) for any refusal.
var ErrBadSignature = errors.New("client: bad webhook signature")

// VerifyWebhookSignature checks a webhook request: header is its Waqueue-Signature
// ("t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>"), body the raw request body,
// secret the webhook's secret from RegisterWebhook. The signature is compared in constant time,
// and t must be within tolerance of now (replay protection; tolerance <= 0 skips that check).
// Several v1 values (a rotated secret) are accepted if any matches.
func VerifyWebhookSignature(secret, header string, body []byte, now time.Time, tolerance time.Duration) error {
	var ts string
	var sigs [][]byte
	for _, part := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			if b, err := hex.DecodeString(v); err == nil {
				sigs = append(sigs, b)
			}
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || len(sigs) == 0 {
		return fmt.Errorf("%w: malformed header %q", ErrBadSignature, header)
	}
	m := hmac.New(sha256.New, []byte(secret))
	io.WriteString(m, ts+".")
	m.Write(body)
	want := m.Sum(nil)
	ok := false
	for _, s := range sigs {
		ok = hmac.Equal(s, want) || ok
	}
	if !ok {
		return fmt.Errorf("%w: signature mismatch", ErrBadSignature)
	}
	if tolerance > 0 {
		if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
			return fmt.Errorf("%w: timestamp %d outside tolerance %s", ErrBadSignature, sec, tolerance)
		}
	}
	return nil
}

// VerifyWebhookRequest reads r's body and verifies it with VerifyWebhookSignature against now
// and a 5-minute tolerance, returning the body when it is authentic.
func VerifyWebhookRequest(r *http.Request, secret string, maxBody int64) ([]byte, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return nil, fmt.Errorf("client: read webhook body: %w", err)
	}
	if int64(len(body)) > maxBody {
		return nil, fmt.Errorf("%w: body over %d bytes", ErrBadSignature, maxBody)
	}
	if err := VerifyWebhookSignature(secret, r.Header.Get(HeaderSignature), body, time.Now(), 5*time.Minute); err != nil {
		return nil, err
	}
	return body, nil
}

// SetOnBan changes what connection id's queue does when its number is banned: "hold" or
// "resume" (PATCH /v1/connections/{id}), and returns the card.
func (c *Client) SetOnBan(ctx context.Context, id, onBan string) (Card, error) {
	body, err := jsonBody(map[string]string{"on_ban": onBan})
	if err != nil {
		return Card{}, err
	}
	var card Card
	_, err = c.cardCommand(ctx, request{method: http.MethodPatch, path: "/v1/connections/" + seg(id), body: body, contentType: "application/json"}, id, &card)
	return card, err
}

// SetSendingPolicy changes the settings of connection id's sending policy that ch sets
// (PATCH /v1/connections/{id}), and returns the card. The dispatcher applies it at once.
func (c *Client) SetSendingPolicy(ctx context.Context, id string, ch SendingPolicyChange) (Card, error) {
	body, err := jsonBody(map[string]any{"sending_policy": ch.body()})
	if err != nil {
		return Card{}, err
	}
	var card Card
	_, err = c.cardCommand(ctx, request{method: http.MethodPatch, path: "/v1/connections/" + seg(id), body: body, contentType: "application/json"}, id, &card)
	return card, err
}

// CancelledMessage is the answer to a cancel.
type CancelledMessage struct {
	MessageID    string    `json:"message_id"`
	ConnectionID string    `json:"connection_id"`
	Seq          uint64    `json:"seq"`
	Status       string    `json:"status"`
	Reason       string    `json:"reason"`
	CancelledBy  string    `json:"cancelled_by"`
	CancelledAt  time.Time `json:"cancelled_at"`
}

// CancelMessage cancels queued message messageID of connection conn for reason (required)
// (DELETE /v1/connections/{id}/messages/{message_id}). A message already dispatched, expired
// or purged is the problem message_not_pending; cancelling twice answers the first cancel.
func (c *Client) CancelMessage(ctx context.Context, conn, messageID, reason string) (CancelledMessage, error) {
	body, err := jsonBody(map[string]string{"reason": reason})
	if err != nil {
		return CancelledMessage{}, err
	}
	var m CancelledMessage
	_, err = c.call(ctx, request{method: http.MethodDelete, path: "/v1/connections/" + seg(conn) + "/messages/" + seg(messageID), body: body, contentType: "application/json"}, &m)
	return m, err
}

package httpapi

import (
	"net/http"
	"time"

	"github.com/waqueue/waqueue/adapters/webhooks"
)

// The /v1/webhooks routes mount the webhooks service (Deps.Webhooks). Every call is scoped to
// the caller's tenant: another tenant's webhook id is answered 404 not_found like an unknown one
// (the service refuses it with webhooks.ErrNotFound).

// webhookJSON is a registered webhook as the API shows it. Its secret is never part of it.
type webhookJSON struct {
	ID         string    `json:"id"`
	URL        string    `json:"url"`
	EventTypes []string  `json:"event_types"`
	CreatedAt  time.Time `json:"created_at"`
}

// createdWebhookJSON is the answer of POST /v1/webhooks: the webhook and, this once, its secret.
type createdWebhookJSON struct {
	webhookJSON
	Secret string `json:"secret"`
}

type attemptJSON struct {
	N  int       `json:"n"`
	At time.Time `json:"at"`
	// StatusCode is 0 when no answer came (Error says why).
	StatusCode int    `json:"status_code"`
	Error      string `json:"error,omitempty"`
}

// deliveryJSON is a delivery as the log shows it. ID is its number within its webhook
// (webhooks.Delivery.Seq: 1, 2, 3…), never the table's key, which counts every tenant's
// deliveries (G9).
type deliveryJSON struct {
	ID         int64         `json:"id"`
	EventID    string        `json:"event_id"`
	EventType  string        `json:"event_type"`
	CreatedAt  time.Time     `json:"created_at"`
	Attempts   []attemptJSON `json:"attempts"`
	LastStatus int           `json:"last_status"`
	LastError  string        `json:"last_error,omitempty"`
	// NextAttemptAt is null once delivered; DeliveredAt is null while pending.
	NextAttemptAt *time.Time `json:"next_attempt_at"`
	DeliveredAt   *time.Time `json:"delivered_at"`
}

func toWebhookJSON(w webhooks.Webhook) webhookJSON {
	return webhookJSON{ID: w.ID, URL: w.URL, EventTypes: w.EventTypes, CreatedAt: w.CreatedAt}
}

func toDeliveryJSON(d webhooks.Delivery) deliveryJSON {
	out := deliveryJSON{
		ID: d.Seq, EventID: d.EventID, EventType: d.EventType, CreatedAt: d.CreatedAt,
		Attempts: make([]attemptJSON, 0, len(d.Attempts)), LastStatus: d.LastStatus, LastError: d.LastError,
	}
	for _, a := range d.Attempts {
		out.Attempts = append(out.Attempts, attemptJSON{N: a.N, At: a.At, StatusCode: a.StatusCode, Error: a.Error})
	}
	if !d.NextAttemptAt.IsZero() {
		t := d.NextAttemptAt
		out.NextAttemptAt = &t
	}
	if !d.DeliveredAt.IsZero() {
		t := d.DeliveredAt
		out.DeliveredAt = &t
	}
	return out
}

// registerWebhook answers POST /v1/webhooks: 201 with the webhook as GET /v1/webhooks shows it
// (the URL normalised, the event types deduplicated) and its signing secret, shown only here.
func (s *server) registerWebhook(w http.ResponseWriter, r *http.Request) error {
	_, b, err := readBody(w, r, s.d.Limits.MaxJSONBody, "application/json")
	if err != nil {
		return err
	}
	req, err := decodeCreateWebhook(b)
	if err != nil {
		return err
	}
	tenant := principal(r).TenantID
	id, secret, err := s.d.Webhooks.Register(r.Context(), tenant, req.URL, req.EventTypes)
	if err != nil {
		return err
	}
	all, err := s.d.Webhooks.List(r.Context(), tenant)
	if err != nil {
		return err
	}
	out := createdWebhookJSON{Secret: secret}
	for _, hook := range all {
		if hook.ID == id {
			out.webhookJSON = toWebhookJSON(hook)
		}
	}
	if out.ID == "" {
		// Deleted by a concurrent request between Register and List: the registration happened,
		// and its secret is the caller's only chance to see it.
		out.webhookJSON = webhookJSON{ID: id, URL: req.URL, EventTypes: req.EventTypes, CreatedAt: s.d.Now().UTC()}
	}
	w.Header().Set("Cache-Control", "no-store")
	return writeJSON(w, http.StatusCreated, out)
}

// listWebhooks answers GET /v1/webhooks: the tenant's live webhooks, oldest first.
func (s *server) listWebhooks(w http.ResponseWriter, r *http.Request) error {
	all, err := s.d.Webhooks.List(r.Context(), principal(r).TenantID)
	if err != nil {
		return err
	}
	out := make([]webhookJSON, 0, len(all))
	for _, hook := range all {
		out = append(out, toWebhookJSON(hook))
	}
	return writeJSON(w, http.StatusOK, map[string]any{"webhooks": out})
}

// deleteWebhook answers DELETE /v1/webhooks/{id}: 204; nothing more is delivered to it, and its
// delivery log stays readable. A webhook deleted already is 404 not_found.
func (s *server) deleteWebhook(w http.ResponseWriter, r *http.Request) error {
	if err := s.d.Webhooks.Delete(r.Context(), principal(r).TenantID, r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// webhookDeliveries answers GET /v1/webhooks/{id}/deliveries?cursor=: one page of the delivery
// log, newest first, and the cursor of the next page ("" on the last; the id of the page's last
// delivery otherwise). A malformed cursor is 400 invalid_request.
func (s *server) webhookDeliveries(w http.ResponseWriter, r *http.Request) error {
	page, next, err := s.d.Webhooks.Deliveries(r.Context(), principal(r).TenantID, r.PathValue("id"), r.URL.Query().Get("cursor"))
	if err != nil {
		return err
	}
	out := make([]deliveryJSON, 0, len(page))
	for _, d := range page {
		out = append(out, toDeliveryJSON(d))
	}
	return writeJSON(w, http.StatusOK, map[string]any{"deliveries": out, "next_cursor": next})
}

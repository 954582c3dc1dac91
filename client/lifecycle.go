package client

import (
	"context"
	"net/http"
)

// LoggedOut is the answer to Logout: the card, and whether WhatsApp confirmed the logout.
type LoggedOut struct {
	Card
	// RemoteLogout is false when the session was not connected (only the stored session was
	// deleted) or there was none.
	RemoteLogout bool `json:"remote_logout"`
}

// Logout logs connection id's WhatsApp session out (POST /v1/connections/{id}/logout): the
// logout is recorded with the caller as actor and the queue held; pair again with
// StartPairingQR or PairPhone. Retrying is safe.
func (c *Client) Logout(ctx context.Context, id string) (LoggedOut, error) {
	var out LoggedOut
	_, err := c.call(ctx, request{method: http.MethodPost, path: "/v1/connections/" + seg(id) + "/logout"}, &out)
	return out, err
}

// RetireRequest retires a connection. Confirm must be its phone number.
type RetireRequest struct {
	Reason  string `json:"reason"`
	Confirm string `json:"confirm"`
	// ClearFirst clears the queue first and retires when the clear completes.
	ClearFirst bool `json:"clear_first,omitempty"`
}

// Retired is the answer to Retire: the retired card (Card set), or with ClearFirst the clear
// that retires the connection when it completes (ClearID set, Status "retiring").
type Retired struct {
	Card
	Status  string `json:"status,omitempty"`
	ClearID string `json:"clear_id,omitempty"`
}

// Retire retires connection id for good (POST /v1/connections/{id}/retire). Without
// ClearFirst, messages pending or in flight are the problem queue_not_empty. idempotencyKey
// makes a ClearFirst retry answer the same clear ("" sends none).
func (c *Client) Retire(ctx context.Context, id string, r RetireRequest, idempotencyKey string) (Retired, error) {
	var out Retired
	var h map[string]string
	if idempotencyKey != "" {
		h = map[string]string{"Idempotency-Key": idempotencyKey}
	}
	_, err := c.postJSON(ctx, "/v1/connections/"+seg(id)+"/retire", r, h, &out)
	return out, err
}

// NumberCheck is one number's answer.
type NumberCheck struct {
	Number     string `json:"number"`
	Phone      string `json:"phone"`
	OnWhatsApp bool   `json:"on_whatsapp"`
	JID        string `json:"jid,omitempty"`
}

// NumberChecks is the answer to CheckNumbers.
type NumberChecks struct {
	ConnectionID  string        `json:"connection_id"`
	Numbers       []NumberCheck `json:"numbers"`
	OnWhatsApp    int           `json:"on_whatsapp"`
	NotOnWhatsApp int           `json:"not_on_whatsapp"`
}

// CheckNumbers asks which of up to 1,000 numbers are on WhatsApp, through connection id's
// session (POST /v1/connections/{id}/contacts/check). Rate limited per connection: the problem
// rate_limited (429; the response's Retry-After says when to retry).
func (c *Client) CheckNumbers(ctx context.Context, id string, numbers []string) (NumberChecks, error) {
	var out NumberChecks
	_, err := c.postJSON(ctx, "/v1/connections/"+seg(id)+"/contacts/check", map[string]any{"numbers": numbers}, nil, &out)
	return out, err
}

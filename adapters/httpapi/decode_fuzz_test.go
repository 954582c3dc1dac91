package httpapi

import (
	"fmt"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/waqueue/waqueue/adapters/apikeys"
	"github.com/waqueue/waqueue/adapters/webhooks"
	"github.com/waqueue/waqueue/domain/connection"
)

// Every request decoder is fuzzed: none may panic, and each either decodes or returns an error
// that the API answers with a 4xx problem (never a 500). The seed corpus lives in
// testdata/fuzz/<FuzzName>/ and runs as ordinary tests with `go test`.

// wantClientError fails unless err is nil or maps to a 4xx problem.
func wantClientError(t *testing.T, body []byte, err error) {
	t.Helper()
	if err == nil {
		return
	}
	p := toProblem(err)
	if p.Status < 400 || p.Status > 499 || p.Code == "" || p.Code == CodeInternal {
		t.Fatalf("body %q: error %v maps to %d %q, want a 4xx problem", body, err, p.Status, p.Code)
	}
}

func FuzzDecodeCreateConnection(f *testing.F) {
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := decodeCreateConnection(body)
		wantClientError(t, body, err)
		if err == nil && (req.Phone == "" || (req.ID != "" && connection.ValidateID("id", req.ID) != nil)) {
			t.Fatalf("accepted %+v", req)
		}
	})
}

func FuzzDecodeEnqueue(f *testing.F) {
	f.Fuzz(func(t *testing.T, body []byte) {
		_, ttl, err := decodeEnqueue(body)
		wantClientError(t, body, err)
		if err == nil && (ttl < 0 || ttl > connection.MaxTTL) {
			t.Fatalf("accepted ttl %v", ttl)
		}
	})
}

func FuzzDecodeBroadcastJSON(f *testing.F) {
	f.Fuzz(func(t *testing.T, body []byte) {
		req, ttl, err := decodeBroadcastJSON(body, 3)
		wantClientError(t, body, err)
		if err == nil && (len(req.Recipients) > 3 || ttl < 0 || ttl > connection.MaxTTL) {
			t.Fatalf("accepted %d recipients, ttl %v", len(req.Recipients), ttl)
		}
	})
}

func FuzzDecodeRecipientsCSV(f *testing.F) {
	f.Fuzz(func(t *testing.T, body []byte) {
		rs, err := decodeRecipientsCSV(body, 3)
		wantClientError(t, body, err)
		if err != nil {
			return
		}
		if len(rs) > 3 {
			t.Fatalf("accepted %d recipients", len(rs))
		}
		for _, r := range rs {
			if r == "" {
				t.Fatalf("empty recipient from %q", body)
			}
		}
	})
}

func FuzzDecodeClear(f *testing.F) {
	f.Fuzz(func(t *testing.T, body []byte) {
		req, _, err := decodeClear(body)
		wantClientError(t, body, err)
		if err == nil && req.Confirm == "" {
			t.Fatalf("accepted a clear without confirmation: %q", body)
		}
	})
}

func FuzzDecodeNote(f *testing.F) {
	f.Fuzz(func(t *testing.T, body []byte) {
		_, err := decodeNote(body)
		wantClientError(t, body, err)
	})
}

func FuzzDecodePairPhone(f *testing.F) {
	f.Fuzz(func(t *testing.T, body []byte) {
		_, err := decodePairPhone(body)
		wantClientError(t, body, err)
	})
}

func FuzzDecodeCreateKey(f *testing.F) {
	f.Fuzz(func(t *testing.T, body []byte) {
		_, role, err := decodeCreateKey(body)
		wantClientError(t, body, err)
		if err == nil && role.IsZero() {
			t.Fatalf("accepted no role: %q", body)
		}
	})
}

func FuzzDecodeChangeKey(f *testing.F) {
	f.Fuzz(func(t *testing.T, body []byte) {
		role, err := decodeChangeKey(body)
		wantClientError(t, body, err)
		if err == nil && role.IsZero() {
			t.Fatalf("accepted no role: %q", body)
		}
	})
}

func FuzzDecodeRevokeKey(f *testing.F) {
	f.Fuzz(func(t *testing.T, body []byte) {
		_, err := decodeRevokeKey(body)
		wantClientError(t, body, err)
	})
}

func FuzzDecodeCreateWebhook(f *testing.F) {
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := decodeCreateWebhook(body)
		wantClientError(t, body, err)
		if err == nil && (req.URL == "" || len(req.URL) > maxWebhookURL || len(req.EventTypes) == 0 || len(req.EventTypes) > maxWebhookEventTypes) {
			t.Fatalf("accepted %q as %+v", body, req)
		}
	})
}

func FuzzDecodeSimBan(f *testing.F) {
	f.Fuzz(func(t *testing.T, body []byte) {
		permanent, expire, err := decodeSimBan(body)
		wantClientError(t, body, err)
		if err == nil && !permanent && expire <= 0 {
			t.Fatalf("temporary ban without expiry from %q", body)
		}
	})
}

// TestProblemMapping holds the one error mapping to the codes the API promises.
func TestProblemMapping(t *testing.T) {
	for _, c := range []struct {
		err    error
		status int
		code   string
	}{
		{&connection.ClearingError{ConnectionID: "c"}, http.StatusConflict, "queue_clearing"},
		{&connection.ValidationError{Code: connection.CodeInvalidPhone, Field: "recipient"}, http.StatusUnprocessableEntity, "invalid_phone"},
		{&connection.ValidationError{Code: connection.CodeTextTooLong, Field: "text"}, http.StatusUnprocessableEntity, "text_too_long"},
		{&http.MaxBytesError{Limit: 10}, http.StatusRequestEntityTooLarge, "body_too_large"},
		{&webhooks.InvalidError{Field: "url", Reason: "r"}, http.StatusUnprocessableEntity, "invalid_webhook"},
		{&webhooks.InvalidError{Field: "cursor", Reason: "r"}, http.StatusBadRequest, "invalid_request"},
		{webhooks.ErrInvalid, http.StatusUnprocessableEntity, "invalid_webhook"},
		{webhooks.ErrNotFound, http.StatusNotFound, "not_found"},
		// The database going away (seen in the PostgreSQL-outage fault test) is 503, never 500.
		{&pgconn.PgError{Code: "57P01", Message: "terminating connection due to administrator command"}, http.StatusServiceUnavailable, "service_unavailable"},
		{&pgconn.PgError{Code: "57P03", Message: "the database system is starting up"}, http.StatusServiceUnavailable, "service_unavailable"},
		{&pgconn.PgError{Code: "08006"}, http.StatusServiceUnavailable, "service_unavailable"},
		{fmt.Errorf("commands: append: %w", syscall.EPIPE), http.StatusServiceUnavailable, "service_unavailable"},
		{fmt.Errorf("apikeys: authenticate: %w", syscall.ECONNRESET), http.StatusServiceUnavailable, "service_unavailable"},
		{errString("read snapshot: write failed: broken pipe"), http.StatusServiceUnavailable, "service_unavailable"},
		{&pgconn.PgError{Code: "23505"}, http.StatusInternalServerError, "internal"},
		{errString("anything else"), http.StatusInternalServerError, "internal"},
	} {
		p := toProblem(wrap(c.err))
		if p.Status != c.status || p.Code != c.code {
			t.Errorf("%v: %d %s, want %d %s", c.err, p.Status, p.Code, c.status, c.code)
		}
	}
}

type errString string

func (e errString) Error() string { return string(e) }

// wrap wraps err twice, as layers do: the mapping must still see it.
func wrap(err error) error { return &wrapped{&wrapped{err}} }

type wrapped struct{ err error }

func (w *wrapped) Error() string { return "layer: " + w.err.Error() }
func (w *wrapped) Unwrap() error { return w.err }

func FuzzDecodeBrokerToken(f *testing.F) {
	for _, s := range []string{``, `{}`, `{"ttl":"15m"}`, `{"ttl":"2h"}`, `{"ttl":"-1m"}`, `{"ttl":5}`, `{"x":1}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		ttl, err := decodeBrokerToken(body)
		wantClientError(t, body, err)
		if err == nil && ttl != 0 && (ttl < time.Minute || ttl > apikeys.MaxTokenTTL) {
			t.Fatalf("accepted ttl %s", ttl)
		}
	})
}

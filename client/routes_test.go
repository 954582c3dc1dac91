package client

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/waqueue/waqueue/adapters/httpapi"
	"github.com/waqueue/waqueue/adapters/webhooks"
)

// calls maps each API route to the Client method that calls it. The reference page and its
// bundle are for browsers, not for a Go client.
var calls = map[string]string{
	"GET /healthz":                  "Health",
	"GET /readyz":                   "Ready",
	"GET /v1/openapi.yaml":          "OpenAPI",
	"GET /docs":                     "",
	"GET /docs/redoc.standalone.js": "",
	"POST /v1/connections":          "RegisterConnection",
	"GET /v1/connections":           "Connections",
	"GET /v1/connections/{id}":      "Connection",
	"PATCH /v1/connections/{id}":    "SetOnBan",
	"DELETE /v1/connections/{id}/messages/{message_id}": "CancelMessage",
	"POST /v1/connections/{id}/pairing/qr":              "StartPairingQR",
	"GET /v1/connections/{id}/pairing/qr":               "PairingQR",
	"POST /v1/connections/{id}/pairing/phone":           "PairPhone",
	"POST /v1/connections/{id}/logout":                  "Logout",
	"POST /v1/connections/{id}/retire":                  "Retire",
	"POST /v1/connections/{id}/contacts/check":          "CheckNumbers",
	"POST /v1/connections/{id}/messages":                "Send",
	"GET /v1/messages/{id}":                             "Message",
	"POST /v1/connections/{id}/broadcasts":              "ImportBroadcast",
	"GET /v1/broadcasts/{id}":                           "Broadcast",
	"GET /v1/connections/{id}/queue":                    "Queue",
	"GET /v1/connections/{id}/queue/clear-preview":      "ClearPreview",
	"POST /v1/connections/{id}/queue/clear":             "Clear",
	"GET /v1/connections/{id}/clears/{clear_id}":        "ClearStatus",
	"GET /v1/connections/{id}/clears":                   "Clears",
	"POST /v1/connections/{id}/queue/hold":              "Hold",
	"POST /v1/connections/{id}/queue/resume":            "Resume",
	"GET /v1/connections/{id}/history":                  "History",
	"GET /v1/audit":                                     "AuditEntries",
	"GET /v1/audit/verify":                              "VerifyAudit",
	"GET /v1/audit/checkpoints":                         "Checkpoints",
	"GET /v1/analytics/daily":                           "AnalyticsDaily",
	"POST /v1/keys":                                     "CreateKey",
	"GET /v1/keys":                                      "Keys",
	"PATCH /v1/keys/{id}":                               "ChangeKeyRole",
	"DELETE /v1/keys/{id}":                              "RevokeKey",
	"POST /v1/broker/tokens":                            "MintBrokerToken",
	"GET /v1/admin/health":                              "AdminHealth",
	"POST /v1/webhooks":                                 "RegisterWebhook",
	"GET /v1/webhooks":                                  "Webhooks",
	"DELETE /v1/webhooks/{id}":                          "DeleteWebhook",
	"GET /v1/webhooks/{id}/deliveries":                  "WebhookDeliveries",
	"POST /v1/connections/{id}/simulator/ban":           "SimulatorBan",
	"POST /v1/connections/{id}/simulator/lift":          "SimulatorLift",
	"POST /v1/connections/{id}/simulator/logout":        "SimulatorLogout",
	"POST /v1/tenants":                                  "CreateTenant",
	"GET /v1/tenants":                                   "Tenants",
	"GET /v1/tenants/{tenant_id}":                       "Tenant",
	"PATCH /v1/tenants/{tenant_id}":                     "ChangeTenant",
	"POST /v1/tenants/{tenant_id}/suspend":              "SuspendTenant",
	"POST /v1/tenants/{tenant_id}/resume":               "ResumeTenant",
	"POST /v1/tenants/{tenant_id}/keys":                 "CreateTenantKey",
}

// TestEveryRouteHasACall: a route added to the API without a Client method fails here.
func TestEveryRouteHasACall(t *testing.T) {
	typ := reflect.TypeFor[*Client]()
	seen := map[string]bool{}
	for _, rt := range httpapi.Routes() {
		k := rt.Method + " " + rt.Pattern
		seen[k] = true
		name, ok := calls[k]
		if !ok {
			t.Errorf("route %s has no Client method (add one and list it in calls)", k)
			continue
		}
		if _, ok := typ.MethodByName(name); name != "" && !ok {
			t.Errorf("route %s: Client has no method %s", k, name)
		}
	}
	for k := range calls {
		if !seen[k] {
			t.Errorf("calls lists %s, which is not a route", k)
		}
	}
}

// TestVerifyWebhookSignatureAgainstServerSigning checks the client's verification against the
// server's signing (adapters/webhooks.Sign) and its refusals.
func TestVerifyWebhookSignatureAgainstServerSigning(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	body := []byte(`{"id":"e1"}`)
	h := webhooks.Sign("whsec_a", now, body)
	if err := VerifyWebhookSignature("whsec_a", h, body, now, time.Minute); err != nil {
		t.Fatalf("server-signed request refused: %v", err)
	}
	if err := webhooks.Verify("whsec_a", h, body, now, time.Minute); err != nil {
		t.Fatalf("server's own Verify refuses: %v", err)
	}
	for name, tc := range map[string]struct {
		secret, header string
		body           []byte
		at             time.Time
	}{
		"other secret":    {"whsec_b", h, body, now},
		"body changed":    {"whsec_a", h, []byte(`{"id":"e2"}`), now},
		"too old":         {"whsec_a", h, body, now.Add(2 * time.Minute)},
		"from the future": {"whsec_a", h, body, now.Add(-2 * time.Minute)},
		"no v1":           {"whsec_a", "t=1800000000", body, now},
		"no t":            {"whsec_a", "v1=00", body, now},
		"empty":           {"whsec_a", "", body, now},
		"t changed":       {"whsec_a", "t=1800000001," + h[len("t=1800000000,"):], body, now},
	} {
		if err := VerifyWebhookSignature(tc.secret, tc.header, tc.body, tc.at, time.Minute); !errors.Is(err, ErrBadSignature) {
			t.Errorf("%s: err %v, want ErrBadSignature", name, err)
		}
	}
	// A rotated secret: any matching v1 is enough.
	rotated := h + ",v1=" + webhooks.Sign("whsec_old", now, body)[len("t=1800000000,v1="):]
	if err := VerifyWebhookSignature("whsec_old", rotated, body, now, time.Minute); err != nil {
		t.Errorf("second v1 refused: %v", err)
	}
}

// TestPagesStops: the iterator stops on an empty cursor, on break, and with an error on a
// cursor that does not move.
func TestPagesStops(t *testing.T) {
	book := map[string]struct {
		items []int
		next  string
	}{"": {[]int{1, 2}, "a"}, "a": {[]int{3}, "b"}, "b": {nil, ""}}
	read := func(c string) ([]int, string, error) { p := book[c]; return p.items, p.next, nil }
	var got []int
	for v, err := range pages(read) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, v)
	}
	if !reflect.DeepEqual(got, []int{1, 2, 3}) {
		t.Errorf("got %v", got)
	}
	reads := 0
	for range pages(func(c string) ([]int, string, error) { reads++; return read(c) }) {
		break
	}
	if reads != 1 {
		t.Errorf("break after the first item read %d pages", reads)
	}
	var last error
	n := 0
	for _, err := range pages(func(string) ([]int, string, error) { return []int{1}, "same", nil }) {
		last = err
		if n++; n > 10 {
			t.Fatal("a cursor that does not move loops")
		}
	}
	if last == nil {
		t.Error("a cursor that does not move ended without an error")
	}
}

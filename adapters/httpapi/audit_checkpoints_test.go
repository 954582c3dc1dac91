package httpapi_test

import (
	"strings"
	"testing"
	"time"

	"github.com/waqueue/waqueue/adapters/httpapi/apitest"
	"github.com/waqueue/waqueue/domain/auditchain"
	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/projections/integration"
)

// TestAuditCheckpoints: an audited event gets a signed checkpoint, listed to the tenant's
// auditors only and sent to the tenant's webhook, where it verifies with the node's public key.
func TestAuditCheckpoints(t *testing.T) {
	e := start(t, apitest.Options{AuditCheckpointEvery: 1})
	auditor := e.key(e.Tenant, auth.RoleAuditor)
	rc := newReceiver(t)
	reg := e.do(e.admin(), "POST", "/v1/webhooks", map[string]any{"url": rc.URL + "/in",
		"event_types": []string{integration.TypeAuditCheckpoint}}, nil)
	wantStatus(t, reg, 201)
	id, _ := e.register(e.key(e.Tenant, auth.RoleOperator))
	e.sync()
	var head uint64
	if r := e.do(auditor, "GET", "/v1/audit?limit=1000", nil, nil); r.Status == 200 {
		var p struct {
			Entries []struct {
				Seq          uint64 `json:"seq"`
				ConnectionID string `json:"connection_id"`
			} `json:"entries"`
		}
		if err := r.JSON(&p); err != nil || len(p.Entries) == 0 || p.Entries[len(p.Entries)-1].ConnectionID != id {
			t.Fatalf("audit = %s (%v), want the registration last", r.Body, err)
		}
		head = p.Entries[len(p.Entries)-1].Seq
	}
	pub := e.Node.AuditCheckpoints.PublicKey()

	var newest auditchain.Checkpoint
	deadline := time.Now().Add(2 * time.Minute) // a safety net only
	for newest.Seq < head {
		r := e.do(auditor, "GET", "/v1/audit/checkpoints", nil, nil)
		wantStatus(t, r, 200)
		var p struct {
			Checkpoints []auditchain.Checkpoint `json:"checkpoints"`
			NextCursor  *string                 `json:"next_cursor"`
		}
		if err := r.JSON(&p); err != nil || p.NextCursor == nil {
			t.Fatalf("checkpoints = %s (%v)", r.Body, err)
		}
		if len(p.Checkpoints) > 0 {
			newest = p.Checkpoints[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no checkpoint at the audit head %d: %s", head, r.Body)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition
	}
	if newest.TenantID != e.Tenant || newest.Verify(pub) != nil {
		t.Fatalf("newest checkpoint %+v does not verify as the tenant's: %v", newest, newest.Verify(pub))
	}

	// The webhook receives each checkpoint; its body verifies as is.
	var got auditchain.Checkpoint
	for got.Seq < newest.Seq {
		for _, m := range rc.received() {
			if m.header.Get("Waqueue-Event-Type") != integration.TypeAuditCheckpoint {
				t.Fatalf("webhook got %s", m.header.Get("Waqueue-Event-Type"))
			}
			cp, err := auditchain.ParseCheckpoint(m.body)
			if err != nil {
				t.Fatalf("webhook body %s: %v", m.body, err)
			}
			if err := cp.Verify(pub); err != nil || cp.TenantID != e.Tenant {
				t.Fatalf("webhook checkpoint %+v: %v", cp, err)
			}
			if cp.Seq > got.Seq {
				got = cp
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the webhook never got checkpoint %d (got %d)", newest.Seq, got.Seq)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition
	}

	// Another tenant's auditor sees its own checkpoints only.
	r := e.do(e.key(otherTenant, auth.RoleAuditor), "GET", "/v1/audit/checkpoints?limit=1000", nil, nil)
	wantStatus(t, r, 200)
	if strings.Contains(string(r.Body), newest.Signature) || strings.Contains(string(r.Body), `"tenant_id":"`+e.Tenant+`"`) {
		t.Fatalf("another tenant sees this tenant's checkpoints: %s", r.Body)
	}
	wantProblem(t, e.do(auditor, "GET", "/v1/audit/checkpoints?cursor=garbage", nil, nil), 400, "invalid_request")
}

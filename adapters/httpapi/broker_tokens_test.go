package httpapi_test

import (
	"strings"
	"testing"
	"time"

	"github.com/waqueue/waqueue/adapters/apikeys"
	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/domain/auth"
)

// TestBrokerTokens: any key mints a broker token for itself; the token authenticates bus
// commands as that key (and its tenant), carries no key, and stops working when the key is
// revoked or the token expires.
func TestBrokerTokens(t *testing.T) {
	e := start(t, apitestOptions())
	sender := e.key(e.Tenant, auth.RoleSender)
	r := e.do(sender, "POST", "/v1/broker/tokens", map[string]any{"ttl": "10m"}, nil)
	wantStatus(t, r, 201)
	m := r.Map()
	tok := str(m, "token")
	if !strings.HasPrefix(tok, apikeys.TokenPrefix) || strings.Contains(tok, sender) || str(m, "tenant_id") != e.Tenant ||
		str(m, "commands_subject_prefix") != "waqueue."+e.Tenant+".commands." || r.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("minted %s", r.Body)
	}
	exp, err := time.Parse(time.RFC3339, str(m, "expires_at"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := e.Node.Tokens.AuthenticateCommand(e.ctx, commands.Credential{Token: tok, At: exp.Add(-time.Second)})
	if err != nil || p.TenantID != e.Tenant || p.Role != auth.RoleSender || p.ID != str(m, "key_id") {
		t.Fatalf("token authenticates as %+v, %v", p, err)
	}
	if _, err := e.Node.Tokens.AuthenticateCommand(e.ctx, commands.Credential{Token: tok, At: exp}); err == nil {
		t.Fatal("an expired token authenticates")
	}
	for _, body := range []map[string]any{{"ttl": "2h"}, {"ttl": "0s"}, {"ttl": "soon"}} {
		wantStatus(t, e.do(sender, "POST", "/v1/broker/tokens", body, nil), 422)
	}
	wantStatus(t, e.do(sender, "POST", "/v1/broker/tokens", nil, nil), 201)
	if err := e.Keys.Revoke(e.ctx, e.Tenant, str(m, "key_id"), "test", "done"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Node.Tokens.AuthenticateCommand(e.ctx, commands.Credential{Token: tok, At: exp.Add(-time.Second)}); err == nil {
		t.Fatal("a revoked key's token authenticates")
	}
}

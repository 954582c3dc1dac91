package auth_test

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/waqueue/waqueue/domain/auth"
)

func TestRoleRights(t *testing.T) {
	all := auth.Rights()
	want := map[auth.Role][]auth.Right{
		auth.RoleAdmin:    all,
		auth.RoleOperator: {auth.ConnectionView, auth.ConnectionEdit, auth.MessageSend, auth.BroadcastMgmt},
		auth.RoleSender:   {auth.ConnectionView, auth.MessageSend, auth.BroadcastMgmt},
		auth.RoleAuditor:  {auth.ConnectionView, auth.AuditRead},
		auth.RoleAnalyst:  {auth.ConnectionView, auth.AnalyticsRead},
	}
	for _, role := range auth.Roles() {
		granted := map[auth.Right]bool{}
		for _, r := range want[role] {
			granted[r] = true
		}
		for _, r := range all {
			if got := role.Grants(r); got != granted[r] {
				t.Errorf("%s grants %s = %v, want %v", role, r, got, granted[r])
			}
		}
	}
	if (auth.Role{}).Grants(auth.ConnectionView) || auth.RoleAdmin.Grants(auth.Right{}) {
		t.Fatal("zero role or zero right grants something")
	}
}

func TestAuthorize(t *testing.T) {
	op := auth.Principal{TenantID: "t1", ID: "alice", Role: auth.RoleOperator}
	if err := op.Authorize("t1", auth.ConnectionEdit); err != nil {
		t.Fatalf("operator clear: %v", err)
	}
	err := op.Authorize("t1", auth.AuditRead)
	var denied *auth.DeniedError
	if !errors.Is(err, auth.ErrForbidden) || errors.Is(err, auth.ErrWrongTenant) || !errors.As(err, &denied) || denied.Right != auth.AuditRead {
		t.Fatalf("operator audit: %v", err)
	}
	if err := op.Authorize("t2", auth.ConnectionView); !errors.Is(err, auth.ErrWrongTenant) || errors.Is(err, auth.ErrForbidden) {
		t.Fatalf("other tenant: %v", err)
	}
	if err := op.Authorize("", auth.ConnectionView); !errors.Is(err, auth.ErrWrongTenant) {
		t.Fatalf("empty tenant: %v", err)
	}
	if (auth.Principal{TenantID: "t1", Role: auth.RoleAdmin}).Can(auth.ConnectionView) {
		t.Fatal("principal without id can act")
	}
	sender := auth.Principal{TenantID: "t1", ID: "svc", Role: auth.RoleSender}
	if sender.Can(auth.ConnectionEdit) || !sender.Can(auth.MessageSend) {
		t.Fatal("sender rights wrong")
	}
}

func TestParseAndJSON(t *testing.T) {
	for _, r := range auth.Rights() {
		if got, err := auth.ParseRight(r.String()); err != nil || got != r {
			t.Errorf("ParseRight(%q) = %v, %v", r, got, err)
		}
	}
	if _, err := auth.ParseRight("connection.delete"); !errors.Is(err, auth.ErrUnknownRight) {
		t.Fatalf("unknown right: %v", err)
	}
	if _, err := auth.ParseRole("root"); !errors.Is(err, auth.ErrUnknownRole) {
		t.Fatalf("unknown role: %v", err)
	}
	p := auth.Principal{TenantID: "t1", ID: "bob", Role: auth.RoleAuditor}
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	var back auth.Principal
	if err := json.Unmarshal(b, &back); err != nil || back != p {
		t.Fatalf("round trip %s: %+v, %v", b, back, err)
	}
	if err := json.Unmarshal([]byte(`{"role":"root"}`), &back); !errors.Is(err, auth.ErrUnknownRole) {
		t.Fatalf("unknown role in JSON: %v", err)
	}
}

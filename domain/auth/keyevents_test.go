package auth_test

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/waqueue/waqueue/domain/auth"
)

func TestKeyEventsRoundTrip(t *testing.T) {
	at := time.Date(2026, 2, 3, 4, 5, 6, 0, time.UTC)
	for _, e := range []auth.KeyEvent{
		auth.APIKeyCreated{KeyID: "key_1", TenantID: "t1", Role: auth.RoleSender, Label: "l", KeyHash: "ab", CreatedBy: "a", CreatedAt: at},
		auth.APIKeyRevoked{KeyID: "key_1", Reason: "r", RevokedBy: "a", RevokedAt: at},
		auth.APIKeyRoleChanged{KeyID: "key_1", Role: auth.RoleAdmin, PreviousRole: auth.RoleSender, ChangedBy: "a", ChangedAt: at},
	} {
		typ, data, err := auth.EncodeKeyEvent(e)
		if err != nil {
			t.Fatal(err)
		}
		got, err := auth.DecodeKeyEvent(typ, data)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, e) {
			t.Fatalf("%s: decoded %#v, want %#v", typ, got, e)
		}
	}
	if _, err := auth.DecodeKeyEvent("APIKeyStolen", []byte(`{}`)); !errors.Is(err, auth.ErrUnknownKeyEvent) {
		t.Fatalf("unknown type: %v", err)
	}
	if _, err := auth.DecodeKeyEvent(auth.TypeAPIKeyRoleChanged, []byte(`{"role":"root"}`)); !errors.Is(err, auth.ErrUnknownRole) {
		t.Fatalf("unknown role: %v", err)
	}
	if got := auth.KeyEventTypes(); !reflect.DeepEqual(got, []string{"APIKeyCreated", "APIKeyRevoked", "APIKeyRoleChanged"}) {
		t.Fatalf("type names changed: %v", got)
	}
	if id, ok := auth.TenantFromStream(auth.TenantStream("t1")); !ok || id != "t1" {
		t.Fatalf("TenantFromStream = %q, %v", id, ok)
	}
	if _, ok := auth.TenantFromStream("connection-t1"); ok {
		t.Fatal("a connection stream is not a tenant stream")
	}
}

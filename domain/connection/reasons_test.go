package connection_test

import (
	"slices"
	"testing"

	"github.com/waqueue/waqueue/domain/connection"
)

func TestExplainReasons(t *testing.T) {
	bans := map[string]string{"101": "sent_to_too_many_people", "102": "blocked_by_users", "103": "created_too_many_groups",
		"104": "sent_too_many_same_message", "105": "unspecified_ban", "106": "broadcast_list", "": "unspecified_ban", "x": "unspecified_ban"}
	for code, want := range bans {
		if r := connection.ExplainBan(connection.BanTemporary, code); r.Code != want || r.Description == "" {
			t.Errorf("ExplainBan(temporary, %q) = %+v, want %s", code, r, want)
		}
	}
	if r := connection.ExplainBan(connection.BanPermanent, ""); r.Code != connection.ReasonAccountBanned {
		t.Errorf("a permanent ban without a code: %+v", r)
	}
	logouts := map[string]string{"401": "logged_out", "403": "main_device_gone", "406": "account_banned", "": "unspecified_logout", "logged out": "unspecified_logout"}
	for code, want := range logouts {
		if r := connection.ExplainLogout(code); r.Code != want || r.Description == "" {
			t.Errorf("ExplainLogout(%q) = %+v, want %s", code, r, want)
		}
	}
	for _, want := range []map[string]string{bans, logouts} {
		for _, code := range want {
			if !slices.Contains(connection.ReasonCodes(), code) {
				t.Errorf("ReasonCodes() lacks %s", code)
			}
		}
	}
}

// TestOldBanEventsDecode: events recorded before Cause existed decode, with an empty Cause that
// ExplainBan / ExplainLogout fill in from the raw code.
func TestOldBanEventsDecode(t *testing.T) {
	ev, err := connection.Decode(connection.TypeConnectionBanned,
		[]byte(`{"kind":"temporary","expires_at":"2026-11-25T13:00:00Z","reason_code":"102","actor":"system","banned_at":"2026-11-25T12:00:00Z"}`))
	if err != nil {
		t.Fatal(err)
	}
	b := ev.(connection.ConnectionBanned)
	if b.Cause != "" || connection.ExplainBan(b.Kind, b.ReasonCode).Code != connection.ReasonBlockedByUsers {
		t.Fatalf("old ban = %+v", b)
	}
	ev, err = connection.Decode(connection.TypeSessionInvalidated, []byte(`{"reason":"401","actor":"system","invalidated_at":"2026-11-25T12:00:00Z"}`))
	if err != nil {
		t.Fatal(err)
	}
	if s := ev.(connection.SessionInvalidated); s.Cause != "" || connection.ExplainLogout(s.Reason).Code != connection.ReasonLoggedOut {
		t.Fatalf("old logout = %+v", s)
	}
}

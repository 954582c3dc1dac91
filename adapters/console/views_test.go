package console

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/projections"
)

// TestCardWords: every link and queue status reads as plain words, with colour and words
// together, and the Clear button only for a role with connection.edit.
func TestCardWords(t *testing.T) {
	c := &Console{}
	at := time.Date(2026, 3, 1, 14, 32, 0, 0, time.UTC)
	operator := auth.Principal{TenantID: "t", ID: "system", Role: auth.RoleOperator}
	sender := auth.Principal{TenantID: "t", ID: "system", Role: auth.RoleSender}
	for _, tc := range []struct {
		name       string
		card       projections.Card
		who        auth.Principal
		link, tone string
		queue      string
		edit       bool
	}{
		{"active", projections.Card{LinkStatus: connection.LinkStatusActive, QueueStatus: connection.QueueStatusOpen}, operator,
			"Active", "ok", "Queue open", true},
		{"unpaired", projections.Card{LinkStatus: connection.LinkStatusUnpaired, QueueStatus: connection.QueueStatusOpen}, sender,
			"Scan the QR code to connect", "warn", "Queue open", false},
		{"banned", projections.Card{LinkStatus: connection.LinkStatusBanned, QueueStatus: connection.QueueStatusHeld,
			Ban:  &projections.CardBan{Kind: connection.BanTemporary, ExpiresAt: at, Reason: "101"},
			Hold: &projections.CardHold{Reason: connection.HoldOnBan}}, operator,
			"Banned until 14:32 UTC — sending too many messages", "bad", "Queue held", true},
		{"banned for good", projections.Card{LinkStatus: connection.LinkStatusBanned, QueueStatus: connection.QueueStatusHeld,
			Ban: &projections.CardBan{Kind: connection.BanPermanent, Reason: "406"}}, operator,
			"Banned permanently", "bad", "Queue held", true},
		{"logged out", projections.Card{LinkStatus: connection.LinkStatusSessionInvalid, QueueStatus: connection.QueueStatusClearing,
			Clear: &projections.CardClear{ClearID: uuid.New(), RequestedBy: "system"}}, operator,
			"Logged out on the phone", "bad", "Clearing", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := c.viewCard(context.Background(), tc.card, tc.who)
			if v.Link.Text != tc.link || v.Link.Tone != tc.tone || v.Queue.Text != tc.queue || v.CanEdit != tc.edit {
				t.Fatalf("got link %q (%s), queue %q, edit %v; want %q (%s), %q, %v",
					v.Link.Text, v.Link.Tone, v.Queue.Text, v.CanEdit, tc.link, tc.tone, tc.queue, tc.edit)
			}
			html, err := (&Console{}).mustTemplates(t).renderCard(v)
			if err != nil {
				t.Fatal(err)
			}
			if hasClear := contains(html, "js-clear"); hasClear != (tc.edit && !v.Clearing) {
				t.Fatalf("Clear button rendered %v for edit=%v clearing=%v", hasClear, tc.edit, v.Clearing)
			}
		})
	}
	for in, want := range map[string]string{
		"session_invalidated: 401":        "Logged out (WhatsApp code 401)",
		"message_failed: not_on_whatsapp": "A message failed: not on whatsapp",
		"stream_replaced":                 "Another device took over the session",
		"connect_failure: 500":            "Could not connect to WhatsApp: 500",
		"something_new: x":                "something new: x",
	} {
		if got := problemWords(in); got != want {
			t.Errorf("problemWords(%q) = %q, want %q", in, got, want)
		}
	}
	if got := words("APIKeyRevoked"); got != "API key revoked" {
		t.Errorf("words = %q", got)
	}
	if got := words("ClearQueueRequested"); got != "Clear queue requested" {
		t.Errorf("words = %q", got)
	}
}

func (c *Console) mustTemplates(t *testing.T) *Console {
	t.Helper()
	if err := c.parseTemplates(); err != nil {
		t.Fatal(err)
	}
	return c
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// TestSafeNext: after sign-in the console only ever redirects inside itself.
func TestSafeNext(t *testing.T) {
	for in, want := range map[string]string{
		"/console/connections/shop-1": "/console/connections/shop-1",
		"":                            "/console/connections",
		"//evil.example/console/":     "/console/connections",
		"https://evil.example/":       "/console/connections",
		"/v1/keys":                    "/console/connections",
		"/console/\\evil.example":     "/console/connections",
		"/console//evil.example":      "/console/connections",
	} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestCardPolicyLine: the card says the sending policy in words and today's dispatches against
// the cap (counted on the connection's local day), and says so when the cap is reached.
func TestCardPolicyLine(t *testing.T) {
	now := time.Date(2026, 3, 1, 14, 0, 0, 0, time.UTC)
	c := &Console{d: Deps{Now: func() time.Time { return now }}}
	operator := auth.Principal{TenantID: "t", ID: "system", Role: auth.RoleOperator}
	berlin := connection.SendingPolicy{MinInterval: 5 * time.Second, Jitter: 3 * time.Second, DailyCap: 300, TimeZone: "Europe/Berlin",
		QuietHours: &connection.QuietHours{Start: 22 * 60, End: 7 * 60}}
	dayStart, _ := connection.Day(now, time.UTC)
	for _, tc := range []struct {
		name string
		card projections.Card
		want []string
	}{
		{"defaults", projections.Card{}, []string{"One message every 3–5 s · ", "0 of 1,000 today"}},
		{"counted today", projections.Card{SendingPolicy: connection.DefaultSendingPolicy(), DayStart: dayStart, DayCount: 12},
			[]string{"12 of 1,000 today"}},
		{"yesterday's count is not today's", projections.Card{SendingPolicy: connection.DefaultSendingPolicy(), DayStart: dayStart.AddDate(0, 0, -1), DayCount: 12},
			[]string{"0 of 1,000 today"}},
		{"quiet hours in the zone", projections.Card{SendingPolicy: berlin},
			[]string{"One message every 5–8 s · quiet 22:00–07:00 (Europe/Berlin)", "0 of 300 today"}},
		{"capped", projections.Card{SendingPolicy: connection.SendingPolicy{MinInterval: time.Second, DailyCap: 2, TimeZone: "UTC"}, DayStart: dayStart, DayCount: 2},
			[]string{"One message every 1 s · ", "2 of 2 today", "the rest waits for tomorrow"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.card.LinkStatus, tc.card.QueueStatus = connection.LinkStatusActive, connection.QueueStatusOpen
			html, err := c.mustTemplates(t).renderCard(c.viewCard(context.Background(), tc.card, operator))
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !contains(html, w) {
					t.Errorf("card lacks %q:\n%s", w, html)
				}
			}
		})
	}
}

package connection_test

import (
	"errors"
	"testing"
	"time"

	"github.com/waqueue/waqueue/domain/connection"
)

func TestEnqueueFingerprintIsCanonical(t *testing.T) {
	c := load(t, history(registered(connection.OnBanHold), paired()))
	fp := func(cmd connection.EnqueueMessage) string {
		t.Helper()
		s, err := c.EnqueueFingerprint(cmd)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	base := connection.EnqueueMessage{IdempotencyKey: "k", Recipient: "+491709999999", Text: "hi", Actor: "svc"}
	want := fp(base)
	same := []connection.EnqueueMessage{
		{IdempotencyKey: "k", Recipient: "+49 170 9999999", Text: "hi", Actor: "svc"},    // formatting
		{IdempotencyKey: "k", Recipient: "0170 9999999", Text: "hi", Actor: "svc"},       // national, own region
		{IdempotencyKey: "other", Recipient: "+491709999999", Text: "hi", Actor: "svc2"}, // key and actor are not content
	}
	for _, cmd := range same {
		if got := fp(cmd); got != want {
			t.Errorf("fingerprint of %+v = %s, want %s (same request)", cmd, got, want)
		}
	}
	other := []connection.EnqueueMessage{
		{Recipient: "+491709999998", Text: "hi"},
		{Recipient: "+491709999999", Text: "hi "},
		{Recipient: "+491709999999", Text: "hi", TTL: time.Minute},
	}
	for _, cmd := range other {
		if got := fp(cmd); got == want {
			t.Errorf("fingerprint of %+v equals the base request's", cmd)
		}
	}
	// The decided event carries the fingerprint.
	evs, err := c.Enqueue(same[0], t0)
	if err != nil {
		t.Fatal(err)
	}
	if got := evs[0].(connection.MessageQueued).Fingerprint; got != want {
		t.Fatalf("MessageQueued.Fingerprint = %q, want %q", got, want)
	}
}

func TestBroadcastFingerprint(t *testing.T) {
	prep := func(recipients []string, text string, ttl time.Duration) string {
		t.Helper()
		p, err := connection.PrepareBroadcast(connection.StartBroadcast{BroadcastID: bcastID, Recipients: recipients,
			Text: text, TTL: ttl, Actor: "svc"}, "DE")
		if err != nil {
			t.Fatal(err)
		}
		return p.Fingerprint()
	}
	want := prep([]string{alice, bob}, "sale", 0)
	if got := prep([]string{"+1 201 555 0123", "+1 (201) 555-0124"}, "sale", 0); got != want {
		t.Errorf("formatted recipients: fingerprint %s, want %s", got, want)
	}
	for name, got := range map[string]string{
		"order":     prep([]string{bob, alice}, "sale", 0),
		"recipient": prep([]string{alice, carol}, "sale", 0),
		"more":      prep([]string{alice, bob, carol}, "sale", 0),
		"text":      prep([]string{alice, bob}, "Sale", 0),
		"ttl":       prep([]string{alice, bob}, "sale", time.Hour),
	} {
		if got == want {
			t.Errorf("%s differs: fingerprint equals the base broadcast's", name)
		}
	}
}

func TestClearInProgressWithAnotherRequestIsRefused(t *testing.T) {
	c := load(t, history(registered(connection.OnBanHold), paired(), queued(1)))
	cmd := connection.RequestClear{ClearID: clearID, Scope: connection.WholeQueue, Reason: "ban", Actor: "op"}
	evs, err := c.RequestClear(cmd, t0)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Apply(evs[0]); err != nil {
		t.Fatal(err)
	}
	// Same key, same request (another actor): an idempotent no-op.
	same := cmd
	same.Actor = "op-2"
	if evs, err := c.RequestClear(same, at(1)); err != nil || evs != nil {
		t.Fatalf("same request while in progress = %v, %v; want a no-op", evs, err)
	}
	for name, other := range map[string]connection.RequestClear{
		"reason": {ClearID: clearID, Scope: connection.WholeQueue, Reason: "other", Actor: "op"},
		"scope":  {ClearID: clearID, Scope: connection.BroadcastScope(bcastID), Reason: "ban", Actor: "op"},
	} {
		evs, err := c.RequestClear(other, at(1))
		var kr *connection.KeyReusedError
		if !errors.As(err, &kr) || !errors.Is(err, connection.ErrIdempotencyKeyReused) || evs != nil {
			t.Fatalf("%s differs while in progress = %v, %v; want *KeyReusedError", name, evs, err)
		}
		if code, _ := connection.ErrorCode(err); code != connection.CodeIdempotencyKeyReused {
			t.Fatalf("code %q, want %q", code, connection.CodeIdempotencyKeyReused)
		}
	}
	// A clear recorded before fingerprints existed: unknown, so every request replays.
	old := load(t, history(registered(connection.OnBanHold), paired(), queued(1),
		clearRequested(connection.WholeQueue, 1, []connection.SeqRange{{From: 1, To: 1}}, nil)))
	if evs, err := old.RequestClear(connection.RequestClear{ClearID: clearID, Reason: "other", Actor: "op"}, at(1)); err != nil || evs != nil {
		t.Fatalf("request against a clear without fingerprint = %v, %v; want a replay (no-op)", evs, err)
	}
}

func TestCheckReplay(t *testing.T) {
	a := connection.ClearFingerprint(connection.RequestClear{Reason: "a"})
	b := connection.ClearFingerprint(connection.RequestClear{Reason: "b"})
	for _, tc := range []struct {
		stored, requested string
		reused            bool
	}{
		{a, a, false},
		{a, b, true},
		{"", b, false},         // recorded before fingerprints: unknown, replay
		{"fp0:abcd", b, false}, // another fingerprint version: unknown, replay
	} {
		err := connection.CheckReplay("c1", "clear", tc.stored, tc.requested)
		if got := errors.Is(err, connection.ErrIdempotencyKeyReused); got != tc.reused {
			t.Errorf("CheckReplay(%q, %q) = %v, want reused %v", tc.stored, tc.requested, err, tc.reused)
		}
	}
}

package commands

import (
	"errors"
	"testing"
	"time"

	"github.com/waqueue/waqueue/domain/connection"
)

// A partial change is recorded with the whole policy and audited to the caller; an unknown or
// malformed time zone and an out-of-bounds setting are refused as *connection.ValidationError
// with their stable code and write nothing; registration accepts a policy too.
func TestSetSendingPolicy(t *testing.T) {
	ctx := testCtx(t)
	store := openSQLite(t)
	clock := &fixedClock{now: t0}
	h := newHandlers(t, store, RepositoryOptions{}, clock.Now)
	h.registerActive(t, ctx, "c-1")

	tz, iv := "America/Sao_Paulo", 10*time.Second
	res, err := h.sending.Handle(as(ctx, operator), SetSendingPolicy{ConnectionID: "c-1",
		Patch: connection.SendingPolicyPatch{TimeZone: &tz, MinInterval: &iv}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Position.IsZero() {
		t.Fatal("no position for a recorded change")
	}
	evs, _ := history(t, ctx, store, "c-1")
	last, ok := evs[len(evs)-1].Event.(connection.SendingPolicyChanged)
	want := connection.DefaultSendingPolicy()
	want.TimeZone, want.MinInterval = tz, iv
	if !ok || !last.Policy.Equal(want) || last.ChangedBy != operator.ID || !last.ChangedAt.Equal(t0) {
		t.Fatalf("last event %#v, want SendingPolicyChanged %+v by %s", evs[len(evs)-1].Event, want, operator.ID)
	}
	before := len(evs)

	// The same values again: a no-op.
	if res, err := h.sending.Handle(as(ctx, operator), SetSendingPolicy{ConnectionID: "c-1", Patch: connection.SendingPolicyPatch{TimeZone: &tz}}); err != nil || !res.Position.IsZero() {
		t.Fatalf("no-op change: %+v, %v", res, err)
	}
	for _, tc := range []struct {
		name  string
		patch connection.SendingPolicyPatch
		code  connection.Code
	}{
		{"unknown zone", connection.SendingPolicyPatch{TimeZone: ptr("Mars/Olympus_Mons")}, connection.CodeInvalidTimeZone},
		{"malformed zone", connection.SendingPolicyPatch{TimeZone: ptr("/etc/localtime")}, connection.CodeInvalidTimeZone},
		{"local is no IANA zone", connection.SendingPolicyPatch{TimeZone: ptr("Local")}, connection.CodeInvalidTimeZone},
		{"cap over the ceiling", connection.SendingPolicyPatch{DailyCap: ptr(connection.MaxDailyCap + 1)}, connection.CodeInvalidSendingPolicy},
		{"interval under the floor", connection.SendingPolicyPatch{MinInterval: ptr(time.Duration(0))}, connection.CodeInvalidSendingPolicy},
		{"nothing to change", connection.SendingPolicyPatch{}, connection.CodeInvalidSendingPolicy},
	} {
		_, err := h.sending.Handle(as(ctx, operator), SetSendingPolicy{ConnectionID: "c-1", Patch: tc.patch})
		var ve *connection.ValidationError
		if !errors.As(err, &ve) || ve.Code != tc.code || !errors.Is(err, connection.ErrInvalidCommand) {
			t.Errorf("%s: err = %v, want a ValidationError %s", tc.name, err, tc.code)
		}
	}
	if n := streamLen(t, ctx, store, "c-1"); n != before {
		t.Fatalf("refused changes wrote %d events", n-before)
	}

	// At registration: ConnectionRegistered then SendingPolicyChanged, in one append.
	cap := 50
	if _, err := h.register.Handle(as(ctx, operator), RegisterConnection{ConnectionID: "c-2", Phone: phone,
		SendingPolicy: &connection.SendingPolicyPatch{DailyCap: &cap}}); err != nil {
		t.Fatal(err)
	}
	evs, _ = history(t, ctx, store, "c-2")
	if len(evs) != 2 || evs[1].Event.(connection.SendingPolicyChanged).Policy.DailyCap != 50 {
		t.Fatalf("registration with a policy recorded %+v", evs)
	}
	if _, err := h.register.Handle(as(ctx, operator), RegisterConnection{ConnectionID: "c-3", Phone: phone,
		SendingPolicy: &connection.SendingPolicyPatch{TimeZone: ptr("Nowhere/Special")}}); !errors.Is(err, connection.ErrInvalidCommand) {
		t.Fatalf("registration with an unknown zone: err = %v", err)
	}
	if n := streamLen(t, ctx, store, "c-3"); n != 0 {
		t.Fatalf("a refused registration wrote %d events", n)
	}
}

func ptr[T any](v T) *T { return &v }

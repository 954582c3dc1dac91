package connection_test

import (
	"errors"
	"testing"

	"github.com/waqueue/waqueue/domain/connection"
)

// TestClearThen covers what a clear leaves the queue as (issue 10.8): by default what it was
// (a held queue stays held, and the report says so), hold, or resume — never resume while
// WhatsApp refuses the number (G7), and never over a hold, ban or session loss recorded while
// the clear ran.
func TestClearThen(t *testing.T) {
	r := func(from, to uint64) connection.SeqRange { return connection.SeqRange{From: from, To: to} }
	lifted := connection.BanLifted{Actor: "system", LiftedAt: t0}
	loggedOut := []connection.Event{
		connection.SessionInvalidated{Reason: "401", Actor: "system", InvalidatedAt: t0},
		connection.QueueHeld{Reason: connection.HoldOnSessionInvalid, Note: "401", Actor: connection.SystemActor, HeldAt: t0},
	}
	request := func(then connection.ClearThen) func(*connection.Connection) ([]connection.Event, error) {
		return func(c *connection.Connection) ([]connection.Event, error) {
			return c.RequestClear(connection.RequestClear{ClearID: clearID, Reason: "ban", Actor: "op", Then: then}, t0)
		}
	}
	complete := func(c *connection.Connection) ([]connection.Event, error) {
		return c.CompleteClear(connection.CompleteClear{ClearID: clearID, Actor: "clearing-process"}, at(1))
	}
	keep := clearRequestedThen(connection.ClearThenKeep, 1, []connection.SeqRange{r(1, 1)})
	hold := clearRequestedThen(connection.ClearThenHold, 1, []connection.SeqRange{r(1, 1)})
	resume := clearRequestedThen(connection.ClearThenResume, 1, []connection.SeqRange{r(1, 1)})
	// legacy is a request recorded before Then existed.
	legacy := clearRequestedThen(connection.ClearThen{}, 1, []connection.SeqRange{r(1, 1)})
	secondID := connection.ClearIDFor(tenant, connID, "clear-2")
	second := connection.ClearQueueRequested{ClearID: secondID, Scope: connection.WholeQueue, RequestedBy: "op", Reason: "again",
		RequestedAt: t0, UpToSeq: 1, Purge: []connection.SeqRange{}, InFlight: []connection.InFlightMessage{}, Then: connection.ClearThenResume}
	afterClear := "clear " + clearID.String()
	resumed := connection.QueueResumed{Reason: connection.ResumeAfterClear, Note: afterClear, Actor: "op", ResumedAt: at(1)}
	heldAfter := connection.QueueHeld{Reason: connection.HoldAfterClear, Note: afterClear, Actor: "op", HeldAt: at(1)}
	wantQueue := func(want connection.QueueStatus, reason connection.HoldReason) func(*testing.T, *connection.Connection, error) {
		return func(t *testing.T, c *connection.Connection, _ error) {
			t.Helper()
			if c.QueueStatus() != want {
				t.Fatalf("queue = %v, want %v", c.QueueStatus(), want)
			}
			h, held := c.CurrentHold()
			if held != !reason.IsZero() || h.Reason != reason {
				t.Fatalf("hold = %+v (held %v), want reason %q", h, held, reason)
			}
		}
	}
	runDecisions(t, []decision{
		{name: "no then is keep", given: history(base, queued(1)), when: request(connection.ClearThen{}), then: []connection.Event{keep}},
		// The user's story: ban → lift → clear. By default the queue stays held, and the report
		// says so (queue_after held).
		{name: "keep after ban and lift: still held, and the report says so", given: history(base, queued(1), banned(), lifted, keep),
			when: complete, then: []connection.Event{clearedHeld(keep)}, check: wantQueue(connection.QueueStatusHeld, connection.HoldOnBan)},
		{name: "a request recorded before then existed completes as keep", given: history(base, queued(1), banned(), lifted, legacy),
			when: complete, then: []connection.Event{func() connection.Event {
				e := clearedHeld(legacy).(connection.QueueCleared)
				e.Then = connection.ClearThenKeep
				return e
			}()}, check: wantQueue(connection.QueueStatusHeld, connection.HoldOnBan)},
		{name: "resume after ban and lift reopens the queue", given: history(base, queued(1), banned(), lifted), when: request(connection.ClearThenResume),
			then: []connection.Event{resume}},
		{name: "resume completes with QueueResumed", given: history(base, queued(1), banned(), lifted, resume),
			when: complete, then: []connection.Event{cleared(resume), resumed}, check: wantQueue(connection.QueueStatusOpen, connection.HoldReason{})},
		// G7: a clear never reopens a banned or logged-out connection's sending.
		{name: "resume while banned is refused (G7)", given: history(base, queued(1), banned()), when: request(connection.ClearThenResume),
			err: connection.ErrLinkStatus, check: func(t *testing.T, _ *connection.Connection, err error) {
				var le *connection.LinkStatusError
				if !errors.As(err, &le) || le.Status != connection.LinkStatusBanned {
					t.Fatalf("error %v, want a LinkStatusError naming banned", err)
				}
			}},
		{name: "resume while logged out is refused (G7)", given: history(base, queued(1), loggedOut), when: request(connection.ClearThenResume),
			err: connection.ErrLinkStatus},
		{name: "keep while banned is allowed", given: history(base, queued(1), banned()), when: request(connection.ClearThenKeep),
			then: []connection.Event{keep}},
		{name: "hold while banned is allowed", given: history(base, queued(1), banned()), when: request(connection.ClearThenHold),
			then: []connection.Event{hold}},
		{name: "resume of an open queue changes nothing", given: history(base, queued(1), resume), when: complete,
			then: []connection.Event{cleared(resume)}, check: wantQueue(connection.QueueStatusOpen, connection.HoldReason{})},
		{name: "hold of an open queue holds it after the clear", given: history(base, queued(1), hold), when: complete,
			then: []connection.Event{clearedHeld(hold), heldAfter}, check: wantQueue(connection.QueueStatusHeld, connection.HoldAfterClear)},
		{name: "hold of a held queue keeps its hold", given: history(base, queued(1), opHeld(), hold), when: complete,
			then: []connection.Event{clearedHeld(hold)}, check: wantQueue(connection.QueueStatusHeld, connection.HoldByOperator)},
		{name: "hold of a queue held by a ban makes the hold explicit", given: history(base, queued(1), banned(), hold),
			when: complete, then: []connection.Event{clearedHeld(hold), heldAfter}, check: wantQueue(connection.QueueStatusHeld, connection.HoldAfterClear)},
		// Under on_ban resume, the lift resumes a ban's hold, but not the hold a clear asked for.
		{name: "on_ban resume: the lift does not resume a clear's hold", given: history(registered(connection.OnBanResume), paired(), queued(1), banned(), hold, clearedHeld(hold), heldAfter),
			when: func(c *connection.Connection) ([]connection.Event, error) {
				return c.LiftBan(connection.LiftBan{Actor: "system"}, at(2))
			}, then: []connection.Event{connection.BanLifted{Actor: "system", LiftedAt: at(2)}}, check: wantQueue(connection.QueueStatusHeld, connection.HoldAfterClear)},
		// The newer fact wins: a ban, a session loss or a hold recorded while clearing.
		{name: "a ban while clearing stops the resume (G7)", given: history(base, queued(1), opHeld(), resume, banned()[0]),
			when: complete, then: []connection.Event{clearedHeld(resume)}, check: wantQueue(connection.QueueStatusHeld, connection.HoldByOperator)},
		{name: "a ban and its lift while clearing stop the resume (G7)", given: history(base, queued(1), opHeld(), resume, banned()[0], lifted),
			when: complete, then: []connection.Event{clearedHeld(resume)}, check: wantQueue(connection.QueueStatusHeld, connection.HoldByOperator)},
		{name: "a session loss and re-pairing while clearing stop the resume", given: history(base, queued(1), resume, loggedOut, paired()),
			when: complete, then: []connection.Event{clearedHeld(resume)}, check: wantQueue(connection.QueueStatusHeld, connection.HoldOnSessionInvalid)},
		{name: "an operator's hold while clearing stops the resume", given: history(base, queued(1), resume, opHeld()),
			when: complete, then: []connection.Event{clearedHeld(resume)}, check: wantQueue(connection.QueueStatusHeld, connection.HoldByOperator)},
		{name: "a hold before the request does not stop the next clear's resume", given: history(base, queued(1), opHeld(), keep, clearedHeld(keep), second),
			when: func(c *connection.Connection) ([]connection.Event, error) {
				return c.CompleteClear(connection.CompleteClear{ClearID: secondID, Actor: "clearing-process"}, at(1))
			}, then: []connection.Event{cleared(second), connection.QueueResumed{Reason: connection.ResumeAfterClear,
				Note: "clear " + secondID.String(), Actor: "op", ResumedAt: at(1)}}, check: wantQueue(connection.QueueStatusOpen, connection.HoldReason{})},
	})
}

// TestClearThenOverruledSurvivesSnapshot: the "newer fact wins" mark is part of the state a
// snapshot keeps, so a node that restores mid-clear does not resume over a ban.
func TestClearThenOverruledSurvivesSnapshot(t *testing.T) {
	resume := clearRequestedThen(connection.ClearThenResume, 1, []connection.SeqRange{{From: 1, To: 1}})
	c := load(t, history(base, queued(1), opHeld(), resume, banned()[0], connection.BanLifted{Actor: "system", LiftedAt: t0}))
	snap, err := c.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	restored, err := connection.Restore(snap)
	if err != nil {
		t.Fatal(err)
	}
	evs, err := restored.CompleteClear(connection.CompleteClear{ClearID: clearID, Actor: "p"}, at(1))
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || evs[0].(connection.QueueCleared).QueueAfter != connection.QueueStatusHeld {
		t.Fatalf("after restore: %s, want QueueCleared alone, queue_after held", dump(evs))
	}
}

func TestParseClearThen(t *testing.T) {
	for in, want := range map[string]connection.ClearThen{"": connection.ClearThenKeep, "keep": connection.ClearThenKeep,
		"hold": connection.ClearThenHold, "resume": connection.ClearThenResume} {
		got, err := connection.ParseClearThen(in)
		if err != nil || got != want {
			t.Errorf("ParseClearThen(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"open", "Resume", "held", " hold"} {
		_, err := connection.ParseClearThen(in)
		var ve *connection.ValidationError
		if !errors.As(err, &ve) || ve.Code != connection.CodeInvalidThen || ve.Field != "then" {
			t.Errorf("ParseClearThen(%q) error = %v, want invalid_then", in, err)
		}
	}
}

// TestClearFingerprintIncludesThen: the same idempotency key with another then is another
// request (refused as a reused key); no then and keep are the same request, with the
// fingerprint clears had before then existed.
func TestClearFingerprintIncludesThen(t *testing.T) {
	fp := func(then connection.ClearThen) string {
		return connection.ClearFingerprint(connection.RequestClear{Scope: connection.WholeQueue, Reason: "r", Then: then})
	}
	if fp(connection.ClearThen{}) != fp(connection.ClearThenKeep) {
		t.Error("no then and keep differ")
	}
	if fp(connection.ClearThenKeep) == fp(connection.ClearThenResume) || fp(connection.ClearThenHold) == fp(connection.ClearThenResume) ||
		fp(connection.ClearThenKeep) == fp(connection.ClearThenHold) {
		t.Error("then does not change the fingerprint")
	}
}

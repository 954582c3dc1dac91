package connection_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/waqueue/waqueue/domain/connection"
)

var (
	reg     = registered(connection.OnBanHold)
	regRes  = registered(connection.OnBanResume)
	base    = history(reg, paired())
	baseRes = history(regRes, paired())
)

func TestRegister(t *testing.T) {
	cmd := connection.RegisterConnection{ConnectionID: connID, TenantID: tenant, Phone: "+49 170 1234567", Actor: "op"}
	runDecisions(t, []decision{
		{name: "registers with the phone in E.164 and the default policy", when: func(c *connection.Connection) ([]connection.Event, error) {
			return c.Register(cmd, t0)
		}, then: []connection.Event{reg}, check: func(t *testing.T, c *connection.Connection, _ error) {
			if c.LinkStatus() != connection.LinkStatusUnpaired || c.QueueStatus() != connection.QueueStatusOpen || c.OnBanPolicy() != connection.OnBanHold {
				t.Fatalf("after register: link %v queue %v policy %v", c.LinkStatus(), c.QueueStatus(), c.OnBanPolicy())
			}
		}},
		{name: "twice", given: history(reg), when: func(c *connection.Connection) ([]connection.Event, error) {
			return c.Register(cmd, t0)
		}, err: connection.ErrAlreadyRegistered},
		{name: "bad phone", when: func(c *connection.Connection) ([]connection.Event, error) {
			bad := cmd
			bad.Phone = "+999 12345"
			return c.Register(bad, t0)
		}, err: connection.ErrInvalidCommand, check: wantCode(connection.CodeInvalidPhone)},
		{name: "national phone is refused (no region to read it in)", when: func(c *connection.Connection) ([]connection.Event, error) {
			bad := cmd
			bad.Phone = "0170 1234567"
			return c.Register(bad, t0)
		}, err: connection.ErrInvalidCommand, check: wantCode(connection.CodeInvalidPhone)},
		{name: "bad connection id", when: func(c *connection.Connection) ([]connection.Event, error) {
			bad := cmd
			bad.ConnectionID = "c/1"
			return c.Register(bad, t0)
		}, err: connection.ErrInvalidCommand, check: wantCode(connection.CodeInvalidID)},
		{name: "no actor", when: func(c *connection.Connection) ([]connection.Event, error) {
			bad := cmd
			bad.Actor = " "
			return c.Register(bad, t0)
		}, err: connection.ErrInvalidCommand, check: wantCode(connection.CodeMissingActor)},
	})
}

func wantCode(code connection.Code) func(*testing.T, *connection.Connection, error) {
	return func(t *testing.T, _ *connection.Connection, err error) {
		t.Helper()
		if ve := asError[*connection.ValidationError](t, err); ve.Code != code {
			t.Fatalf("code = %q, want %q (%v)", ve.Code, code, err)
		}
	}
}

func TestOnBanPolicy(t *testing.T) {
	runDecisions(t, []decision{
		{name: "change", given: base, when: func(c *connection.Connection) ([]connection.Event, error) {
			return c.ChangeOnBanPolicy(connection.SetOnBanPolicy{Policy: connection.OnBanResume, Actor: "op"}, at(1))
		}, then: []connection.Event{connection.OnBanPolicyChanged{Policy: connection.OnBanResume, ChangedBy: "op", ChangedAt: at(1)}}},
		{name: "same policy is a no-op", given: base, when: func(c *connection.Connection) ([]connection.Event, error) {
			return c.ChangeOnBanPolicy(connection.SetOnBanPolicy{Policy: connection.OnBanHold, Actor: "op"}, at(1))
		}, then: nil},
		{name: "zero policy", given: base, when: func(c *connection.Connection) ([]connection.Event, error) {
			return c.ChangeOnBanPolicy(connection.SetOnBanPolicy{Actor: "op"}, at(1))
		}, err: connection.ErrInvalidCommand, check: wantCode(connection.CodeInvalidPolicy)},
		{name: "not registered", when: func(c *connection.Connection) ([]connection.Event, error) {
			return c.ChangeOnBanPolicy(connection.SetOnBanPolicy{Policy: connection.OnBanResume, Actor: "op"}, at(1))
		}, err: connection.ErrNotRegistered},
	})
}

func TestLinkLifecycle(t *testing.T) {
	ban := connection.BanConnection{Kind: connection.BanTemporary, ExpiresAt: at(60), ReasonCode: "101", Actor: "system"}
	runDecisions(t, []decision{
		{name: "pair from unpaired", given: history(reg), when: func(c *connection.Connection) ([]connection.Event, error) {
			return c.Pair(connection.PairSession{JID: "491701234567.0:1@s.whatsapp.net", Actor: "op"}, t0)
		}, then: []connection.Event{connection.SessionPaired{JID: "491701234567.0:1@s.whatsapp.net", Actor: "op", PairedAt: t0}}},
		{name: "pair while active", given: base, when: func(c *connection.Connection) ([]connection.Event, error) {
			return c.Pair(connection.PairSession{Actor: "op"}, t0)
		}, err: connection.ErrLinkStatus, check: func(t *testing.T, _ *connection.Connection, err error) {
			if e := asError[*connection.LinkStatusError](t, err); e.Status != connection.LinkStatusActive || e.ConnectionID != connID {
				t.Fatalf("LinkStatusError = %+v", e)
			}
		}},
		{name: "ban holds the queue (G7)", given: base, when: func(c *connection.Connection) ([]connection.Event, error) {
			return c.Ban(ban, t0)
		}, then: banned(), check: func(t *testing.T, c *connection.Connection, _ error) {
			b, ok := c.CurrentBan()
			if c.LinkStatus() != connection.LinkStatusBanned || c.QueueStatus() != connection.QueueStatusHeld || !ok || !b.ExpiresAt.Equal(at(60)) {
				t.Fatalf("after ban: link %v queue %v ban %+v", c.LinkStatus(), c.QueueStatus(), b)
			}
		}},
		{name: "ban of an operator-held queue keeps the operator's hold", given: history(base, opHeld()), when: func(c *connection.Connection) ([]connection.Event, error) {
			return c.Ban(ban, t0)
		}, then: banned()[:1], check: func(t *testing.T, c *connection.Connection, _ error) {
			if h, _ := c.CurrentHold(); h.Reason != connection.HoldByOperator {
				t.Fatalf("hold reason = %v", h.Reason)
			}
		}},
		{name: "permanent ban escalates a temporary one", given: history(base, banned()), when: func(c *connection.Connection) ([]connection.Event, error) {
			return c.Ban(connection.BanConnection{Kind: connection.BanPermanent, ReasonCode: "406", Actor: "system"}, at(2))
		}, then: []connection.Event{connection.ConnectionBanned{Kind: connection.BanPermanent, ReasonCode: "406", Cause: connection.ReasonAccountBanned, Actor: "system", BannedAt: at(2)}}},
		{name: "temporary ban without expiry", given: base, when: func(c *connection.Connection) ([]connection.Event, error) {
			return c.Ban(connection.BanConnection{Kind: connection.BanTemporary, ReasonCode: "101", Actor: "system"}, t0)
		}, err: connection.ErrInvalidCommand, check: wantCode(connection.CodeInvalidBan)},
		{name: "permanent ban with expiry", given: base, when: func(c *connection.Connection) ([]connection.Event, error) {
			return c.Ban(connection.BanConnection{Kind: connection.BanPermanent, ExpiresAt: at(5), ReasonCode: "406", Actor: "system"}, t0)
		}, err: connection.ErrInvalidCommand, check: wantCode(connection.CodeInvalidBan)},
		{name: "ban without reason code", given: base, when: func(c *connection.Connection) ([]connection.Event, error) {
			return c.Ban(connection.BanConnection{Kind: connection.BanPermanent, Actor: "system"}, t0)
		}, err: connection.ErrInvalidCommand, check: wantCode(connection.CodeMissingReason)},
		{name: "ban of an unpaired connection", given: history(reg), when: func(c *connection.Connection) ([]connection.Event, error) {
			return c.Ban(ban, t0)
		}, err: connection.ErrLinkStatus},
		{name: "lift with policy hold keeps the queue held (G7)", given: history(base, banned()), when: func(c *connection.Connection) ([]connection.Event, error) {
			return c.LiftBan(connection.LiftBan{Actor: "system"}, at(61))
		}, then: []connection.Event{connection.BanLifted{Actor: "system", LiftedAt: at(61)}}, check: func(t *testing.T, c *connection.Connection, _ error) {
			if c.LinkStatus() != connection.LinkStatusActive || c.QueueStatus() != connection.QueueStatusHeld {
				t.Fatalf("after lift: link %v queue %v", c.LinkStatus(), c.QueueStatus())
			}
		}},
		{name: "lift with policy resume resumes the automatic hold", given: history(baseRes, banned()), when: func(c *connection.Connection) ([]connection.Event, error) {
			return c.LiftBan(connection.LiftBan{Actor: "system"}, at(61))
		}, then: []connection.Event{connection.BanLifted{Actor: "system", LiftedAt: at(61)},
			connection.QueueResumed{Reason: connection.ResumeOnBanLifted, Actor: connection.SystemActor, ResumedAt: at(61)}},
			check: func(t *testing.T, c *connection.Connection, _ error) {
				if c.QueueStatus() != connection.QueueStatusOpen {
					t.Fatalf("queue = %v", c.QueueStatus())
				}
			}},
		{name: "lift with policy resume never resumes an operator's hold", given: history(baseRes, opHeld(), banned()[0]), when: func(c *connection.Connection) ([]connection.Event, error) {
			return c.LiftBan(connection.LiftBan{Actor: "system"}, at(61))
		}, then: []connection.Event{connection.BanLifted{Actor: "system", LiftedAt: at(61)}}},
		{name: "lift when not banned", given: base, when: func(c *connection.Connection) ([]connection.Event, error) {
			return c.LiftBan(connection.LiftBan{Actor: "system"}, at(61))
		}, err: connection.ErrLinkStatus},
		{name: "session loss holds the queue (G7)", given: base, when: func(c *connection.Connection) ([]connection.Event, error) {
			return c.InvalidateSession(connection.InvalidateSession{Reason: "logged out", Actor: "system"}, t0)
		}, then: []connection.Event{connection.SessionInvalidated{Reason: "logged out", Cause: connection.ReasonUnspecifiedLogout, Actor: "system", InvalidatedAt: t0},
			connection.QueueHeld{Reason: connection.HoldOnSessionInvalid, Note: "logged out", Actor: connection.SystemActor, HeldAt: t0}}},
		{name: "session loss of an unpaired connection", given: history(reg), when: func(c *connection.Connection) ([]connection.Event, error) {
			return c.InvalidateSession(connection.InvalidateSession{Actor: "system"}, t0)
		}, err: connection.ErrLinkStatus},
		{name: "re-pairing with policy hold keeps the queue held", given: history(base, connection.SessionInvalidated{Actor: "system", InvalidatedAt: t0},
			connection.QueueHeld{Reason: connection.HoldOnSessionInvalid, Actor: connection.SystemActor, HeldAt: t0}),
			when: func(c *connection.Connection) ([]connection.Event, error) {
				return c.Pair(connection.PairSession{Actor: "op"}, at(5))
			}, then: []connection.Event{connection.SessionPaired{Actor: "op", PairedAt: at(5)}}},
		{name: "re-pairing with policy resume resumes", given: history(baseRes, connection.SessionInvalidated{Actor: "system", InvalidatedAt: t0},
			connection.QueueHeld{Reason: connection.HoldOnSessionInvalid, Actor: connection.SystemActor, HeldAt: t0}),
			when: func(c *connection.Connection) ([]connection.Event, error) {
				return c.Pair(connection.PairSession{Actor: "op"}, at(5))
			}, then: []connection.Event{connection.SessionPaired{Actor: "op", PairedAt: at(5)},
				connection.QueueResumed{Reason: connection.ResumeOnSessionPair, Actor: connection.SystemActor, ResumedAt: at(5)}}},
		{name: "ban of a connection that is not registered", when: func(c *connection.Connection) ([]connection.Event, error) {
			return c.Ban(ban, t0)
		}, err: connection.ErrNotRegistered},
	})
}

func enq(key, to, text string) when {
	return func(c *connection.Connection) ([]connection.Event, error) {
		return c.Enqueue(connection.EnqueueMessage{IdempotencyKey: key, Recipient: to, Text: text, Actor: "svc"}, t0)
	}
}

func TestEnqueue(t *testing.T) {
	req := clearRequested(connection.WholeQueue, 1, []connection.SeqRange{{From: 1, To: 1}}, nil)
	runDecisions(t, []decision{
		{name: "queues at seq 1 with the derived id", given: base, when: enq("k1", " +1 201 555 0123 ", "hi"),
			then: []connection.Event{queued(1)}, check: func(t *testing.T, c *connection.Connection, _ error) {
				if c.Pending() != 1 || c.LastSeq() != 1 {
					t.Fatalf("pending %d last %d", c.Pending(), c.LastSeq())
				}
			}},
		{name: "next seq follows a broadcast", given: history(base, broadcast(bcastID, 1)), when: enq("k4", alice, "hi"),
			then: []connection.Event{queued(4)}},
		{name: "national number read in the connection's region", given: base, when: enq("k1", "0170 7654321", "hi"),
			then: []connection.Event{connection.MessageQueued{MessageID: msgID(1), Seq: 1, Recipient: "+491707654321", Text: "hi",
				IdempotencyKey: "k1", QueuedBy: "svc", QueuedAt: t0}}},
		{name: "TTL sets the expiry", given: base, when: func(c *connection.Connection) ([]connection.Event, error) {
			return c.Enqueue(connection.EnqueueMessage{IdempotencyKey: "k1", Recipient: alice, Text: "hi", TTL: time.Hour, Actor: "svc"}, t0)
		}, then: []connection.Event{queuedTTL(1, at(60))}},
		{name: "accepted while held and banned (it waits)", given: history(base, banned()), when: enq("k1", alice, "hi"),
			then: []connection.Event{queued(1)}},
		{name: "accepted before pairing", given: history(reg), when: enq("k1", alice, "hi"), then: []connection.Event{queued(1)}},
		{name: "4096 characters of multi-byte text", given: base, when: enq("k1", alice, strings.Repeat("é", 4096)),
			then: []connection.Event{connection.MessageQueued{MessageID: msgID(1), Seq: 1, Recipient: alice, Text: strings.Repeat("é", 4096),
				IdempotencyKey: "k1", QueuedBy: "svc", QueuedAt: t0}}},
		{name: "text too long", given: base, when: enq("k1", alice, strings.Repeat("é", 4097)),
			err: connection.ErrInvalidCommand, check: wantCode(connection.CodeTextTooLong)},
		{name: "blank text", given: base, when: enq("k1", alice, " \n"),
			err: connection.ErrInvalidCommand, check: wantCode(connection.CodeTextEmpty)},
		{name: "text not UTF-8", given: base, when: enq("k1", alice, "\xff"),
			err: connection.ErrInvalidCommand, check: wantCode(connection.CodeInvalidText)},
		{name: "bad phone", given: base, when: enq("k1", "12", "hi"),
			err: connection.ErrInvalidCommand, check: wantCode(connection.CodeInvalidPhone)},
		{name: "phone of an unknown country code", given: base, when: enq("k1", "+999 1234 5678", "hi"),
			err: connection.ErrInvalidCommand, check: wantCode(connection.CodeInvalidPhone)},
		{name: "negative TTL", given: base, when: func(c *connection.Connection) ([]connection.Event, error) {
			return c.Enqueue(connection.EnqueueMessage{IdempotencyKey: "k1", Recipient: alice, Text: "hi", TTL: -time.Second, Actor: "svc"}, t0)
		}, err: connection.ErrInvalidCommand, check: wantCode(connection.CodeInvalidTTL)},
		{name: "no idempotency key", given: base, when: enq("", alice, "hi"),
			err: connection.ErrInvalidCommand, check: wantCode(connection.CodeMissingIdempotencyKey)},
		{name: "not registered", when: enq("k1", alice, "hi"), err: connection.ErrNotRegistered},
		{name: "refused while clearing (G2)", given: history(base, queued(1), req), when: enq("k2", alice, "hi"),
			err: connection.ErrQueueClearing, check: func(t *testing.T, _ *connection.Connection, err error) {
				e := asError[*connection.ClearingError](t, err)
				if e.ClearID != clearID || !e.Since.Equal(t0) || e.ConnectionID != connID {
					t.Fatalf("ClearingError = %+v", e)
				}
			}},
		{name: "accepted again once cleared", given: history(base, queued(1), req, cleared(req)), when: enq("k2", alice, "hi"),
			then: []connection.Event{queued(2)}},
	})
}

func TestStartBroadcast(t *testing.T) {
	start := func(rcpts ...string) func(*connection.Connection) ([]connection.Event, error) {
		return func(c *connection.Connection) ([]connection.Event, error) {
			return c.StartBroadcast(connection.StartBroadcast{BroadcastID: bcastID, Recipients: rcpts, Text: "sale", Actor: "svc"}, t0)
		}
	}
	req := clearRequested(connection.WholeQueue, 0, nil, nil)
	tooMany := make([]string, connection.MaxRecipients+1)
	runDecisions(t, []decision{
		{name: "one BroadcastStarted then a BroadcastQueued chunk of the recipients", given: base, when: start(alice, "+1 201-555-0124", carol),
			then: broadcastChunked(bcastID, 1), check: func(t *testing.T, c *connection.Connection, _ error) {
				if c.Pending() != 3 || len(c.PendingBroadcasts()) != 1 {
					t.Fatalf("pending %d broadcasts %v", c.Pending(), c.PendingBroadcasts())
				}
			}},
		{name: "seqs continue the queue", given: history(base, queued(1)), when: start(alice, bob, carol), then: broadcastChunked(bcastID, 2)},
		{name: "duplicate recipient", given: base, when: start(alice, bob, "+1 (201) 555-0123"),
			err: connection.ErrInvalidCommand, check: func(t *testing.T, c *connection.Connection, err error) {
				wantCode(connection.CodeDuplicateRecipient)(t, c, err)
				if e := asError[*connection.ValidationError](t, err); e.Recipient != 3 {
					t.Fatalf("recipient = %d, want 3", e.Recipient)
				}
			}},
		{name: "bad recipient is named", given: base, when: start(alice, "nope", carol),
			err: connection.ErrInvalidCommand, check: func(t *testing.T, c *connection.Connection, err error) {
				wantCode(connection.CodeInvalidPhone)(t, c, err)
				if e := asError[*connection.ValidationError](t, err); e.Recipient != 2 {
					t.Fatalf("recipient = %d, want 2", e.Recipient)
				}
			}},
		{name: "no recipients", given: base, when: start(), err: connection.ErrInvalidCommand, check: wantCode(connection.CodeNoRecipients)},
		{name: "too many recipients", given: base, when: start(tooMany...), err: connection.ErrInvalidCommand, check: wantCode(connection.CodeTooManyRecipients)},
		{name: "no broadcast id", given: base, when: func(c *connection.Connection) ([]connection.Event, error) {
			return c.StartBroadcast(connection.StartBroadcast{Recipients: []string{alice}, Text: "sale", Actor: "svc"}, t0)
		}, err: connection.ErrInvalidCommand, check: wantCode(connection.CodeInvalidID)},
		{name: "refused while clearing (G2)", given: history(base, req), when: start(alice), err: connection.ErrQueueClearing},
	})
}

func disp(seq uint64) func(*connection.Connection) ([]connection.Event, error) {
	return dispAt(msgID(seq), seq, time.Time{}, at(1))
}

func dispAt(id [16]byte, seq uint64, expires, now time.Time) func(*connection.Connection) ([]connection.Event, error) {
	return func(c *connection.Connection) ([]connection.Event, error) {
		return c.Dispatch(connection.DispatchMessage{MessageID: id, Seq: seq, ExpiresAt: expires}, now)
	}
}

func TestDispatch(t *testing.T) {
	whole := clearRequested(connection.WholeQueue, 2, []connection.SeqRange{{From: 1, To: 2}}, nil)
	scoped := clearRequested(connection.BroadcastScope(bcastID), 5, []connection.SeqRange{{From: 2, To: 4}}, nil)
	ok := func(seq uint64) []connection.Event {
		return []connection.Event{connection.MessageDispatched{MessageID: msgID(seq), Seq: seq, DispatchedAt: at(1)}}
	}
	runDecisions(t, []decision{
		{name: "the head", given: history(base, queued(1), queued(2)), when: disp(1), then: ok(1),
			check: func(t *testing.T, c *connection.Connection, _ error) {
				if h, _ := c.Head(); h != 2 || c.Pending() != 1 || len(c.InFlight()) != 1 {
					t.Fatalf("head %d pending %d in flight %v", h, c.Pending(), c.InFlight())
				}
			}},
		{name: "the second after the first", given: history(base, queued(1), queued(2), dispatched(msgID(1), 1)), when: disp(2), then: ok(2)},
		{name: "twice is refused (G5)", given: history(base, queued(1), queued(2), dispatched(msgID(1), 1)), when: disp(1),
			err: connection.ErrAlreadyDisposed, check: func(t *testing.T, _ *connection.Connection, err error) {
				if e := asError[*connection.SequenceError](t, err); e.Seq != 1 || e.Next != 2 || e.Last != 2 {
					t.Fatalf("SequenceError = %+v", e)
				}
			}},
		{name: "twice after acknowledgement is refused (G5)", given: history(base, queued(1), dispatched(msgID(1), 1), sent(msgID(1), 1)),
			when: disp(1), err: connection.ErrAlreadyDisposed},
		{name: "out of order", given: history(base, queued(1), queued(2)), when: disp(2), err: connection.ErrNotNext},
		{name: "beyond the last message", given: history(base, queued(1)), when: disp(2), err: connection.ErrUnknownMessage},
		{name: "empty queue", given: base, when: disp(1), err: connection.ErrUnknownMessage},
		{name: "refused while clearing (G1)", given: history(base, queued(1), queued(2), whole), when: disp(1),
			err: connection.ErrQueueClearing},
		{name: "message purged by a clear is refused after it (G1)", given: history(base, queued(1), queued(2), whole, cleared(whole)),
			when: disp(1), err: connection.ErrMessagePurged, check: func(t *testing.T, _ *connection.Connection, err error) {
				if e := asError[*connection.MessagePurgedError](t, err); e.ClearID != clearID || e.Seq != 1 {
					t.Fatalf("MessagePurgedError = %+v", e)
				}
			}},
		{name: "the whole purged range is refused (G1)", given: history(base, queued(1), queued(2), whole, cleared(whole)),
			when: disp(2), err: connection.ErrMessagePurged},
		{name: "a message queued after the clear goes out", given: history(base, queued(1), queued(2), whole, cleared(whole), queued(3)),
			when: disp(3), then: ok(3)},
		{name: "clear scoped to a broadcast keeps 1:1 messages", given: history(base, queued(1), broadcast(bcastID, 2), queued(5), scoped, cleared(scoped)),
			when: disp(1), then: ok(1), check: func(t *testing.T, c *connection.Connection, _ error) {
				if h, _ := c.Head(); h != 5 || c.Pending() != 1 {
					t.Fatalf("after dispatching 1: head %d pending %d, want head 5 pending 1", h, c.Pending())
				}
			}},
		{name: "a broadcast message purged by a scoped clear is refused", given: history(base, queued(1), broadcast(bcastID, 2), queued(5), scoped, cleared(scoped), dispatched(msgID(1), 1)),
			when: dispAt(connection.BroadcastMessageID(bcastID, 0), 2, time.Time{}, at(1)), err: connection.ErrMessagePurged},
		{name: "the 1:1 message after a scoped-cleared broadcast goes out", given: history(base, queued(1), broadcast(bcastID, 2), queued(5), scoped, cleared(scoped), dispatched(msgID(1), 1)),
			when: disp(5), then: ok(5)},
		{name: "refused while held by an operator", given: history(base, queued(1), opHeld()), when: disp(1),
			err: connection.ErrQueueHeld, check: func(t *testing.T, _ *connection.Connection, err error) {
				if e := asError[*connection.QueueHeldError](t, err); e.Reason != connection.HoldByOperator {
					t.Fatalf("QueueHeldError = %+v", e)
				}
			}},
		{name: "refused while banned (G7)", given: history(base, queued(1), banned()), when: disp(1), err: connection.ErrQueueHeld},
		{name: "refused while banned even when resumed (G7)", given: history(base, queued(1), banned(),
			connection.QueueResumed{Reason: connection.ResumeByOperator, Actor: "op", ResumedAt: t0}), when: disp(1), err: connection.ErrLinkStatus},
		{name: "refused after the ban lifts with policy hold (G7)", given: history(base, queued(1), banned(),
			connection.BanLifted{Actor: "system", LiftedAt: t0}), when: disp(1), err: connection.ErrQueueHeld},
		{name: "goes out after the ban lifts with policy resume", given: history(baseRes, queued(1), banned(),
			connection.BanLifted{Actor: "system", LiftedAt: t0},
			connection.QueueResumed{Reason: connection.ResumeOnBanLifted, Actor: connection.SystemActor, ResumedAt: t0}), when: disp(1), then: ok(1)},
		{name: "refused when the session is invalid (G7)", given: history(base, queued(1), connection.SessionInvalidated{Actor: "system", InvalidatedAt: t0},
			connection.QueueHeld{Reason: connection.HoldOnSessionInvalid, Actor: connection.SystemActor, HeldAt: t0}), when: disp(1), err: connection.ErrQueueHeld},
		{name: "refused before pairing", given: history(reg, queued(1)), when: disp(1), err: connection.ErrLinkStatus},
		{name: "expired message is refused", given: history(base, queuedTTL(1, at(1))), when: dispAt(msgID(1), 1, at(1), at(1)),
			err: connection.ErrMessageExpired},
		{name: "message before its expiry goes out", given: history(base, queuedTTL(1, at(2))), when: dispAt(msgID(1), 1, at(2), at(1)),
			then: ok(1)},
		{name: "no message id", given: history(base, queued(1)), when: dispAt([16]byte{}, 1, time.Time{}, at(1)),
			err: connection.ErrInvalidCommand, check: wantCode(connection.CodeMissingMessage)},
	})
}

func TestExpire(t *testing.T) {
	expire := func(seq uint64, expires, now time.Time) func(*connection.Connection) ([]connection.Event, error) {
		return func(c *connection.Connection) ([]connection.Event, error) {
			return c.Expire(connection.ExpireMessage{MessageID: msgID(seq), Seq: seq, ExpiresAt: expires}, now)
		}
	}
	runDecisions(t, []decision{
		{name: "head past its TTL", given: history(base, queuedTTL(1, at(5)), queued(2)), when: expire(1, at(5), at(5)),
			then: []connection.Event{connection.MessageExpired{MessageID: msgID(1), Seq: 1, ExpiresAt: at(5), ExpiredAt: at(5)}},
			check: func(t *testing.T, c *connection.Connection, _ error) {
				if h, _ := c.Head(); h != 2 || c.Counters().Expired != 1 {
					t.Fatalf("head %d counters %+v", h, c.Counters())
				}
			}},
		{name: "expires while held and banned", given: history(base, queuedTTL(1, at(5)), banned()), when: expire(1, at(5), at(6)),
			then: []connection.Event{connection.MessageExpired{MessageID: msgID(1), Seq: 1, ExpiresAt: at(5), ExpiredAt: at(6)}}},
		{name: "before its TTL", given: history(base, queuedTTL(1, at(5))), when: expire(1, at(5), at(4)), err: connection.ErrNotExpired},
		{name: "without a TTL", given: history(base, queued(1)), when: expire(1, time.Time{}, at(4)), err: connection.ErrNotExpired},
		{name: "not the head", given: history(base, queued(1), queuedTTL(2, at(5))), when: expire(2, at(5), at(6)), err: connection.ErrNotNext},
		{name: "expired message cannot be dispatched", given: history(base, queuedTTL(1, at(5)),
			connection.MessageExpired{MessageID: msgID(1), Seq: 1, ExpiresAt: at(5), ExpiredAt: at(5)}), when: disp(1), err: connection.ErrAlreadyDisposed},
		{name: "dispatched message cannot expire", given: history(base, queuedTTL(1, at(5)), dispatched(msgID(1), 1)), when: expire(1, at(5), at(6)),
			err: connection.ErrAlreadyDisposed},
	})
}

func TestRecordOutcome(t *testing.T) {
	out := func(seq uint64, kind connection.MessageStatus, code string) func(*connection.Connection) ([]connection.Event, error) {
		return func(c *connection.Connection) ([]connection.Event, error) {
			return c.RecordOutcome(connection.Outcome{MessageID: msgID(seq), Seq: seq, Kind: kind, Code: code, Detail: "d"}, at(2))
		}
	}
	inFlight := history(base, queued(1), queued(2), dispatched(msgID(1), 1))
	isSent := history(inFlight, sent(msgID(1), 1))
	runDecisions(t, []decision{
		{name: "sent", given: inFlight, when: out(1, connection.MessageStatusSent, ""),
			then: []connection.Event{connection.MessageSent{MessageID: msgID(1), Seq: 1, SentAt: at(2)}},
			check: func(t *testing.T, c *connection.Connection, _ error) {
				if len(c.InFlight()) != 0 || c.Counters().Acknowledged != 1 {
					t.Fatalf("in flight %v counters %+v", c.InFlight(), c.Counters())
				}
			}},
		{name: "sent twice", given: isSent, when: out(1, connection.MessageStatusSent, ""), err: connection.ErrNotInFlight},
		{name: "sent before dispatch", given: inFlight, when: out(2, connection.MessageStatusSent, ""), err: connection.ErrNotInFlight},
		{name: "failed", given: inFlight, when: out(1, connection.MessageStatusFailed, "not_on_whatsapp"),
			then: []connection.Event{connection.MessageFailed{MessageID: msgID(1), Seq: 1, Code: "not_on_whatsapp", Detail: "d", FailedAt: at(2)}}},
		{name: "failed without code", given: inFlight, when: out(1, connection.MessageStatusFailed, ""),
			err: connection.ErrInvalidCommand, check: wantCode(connection.CodeMissingReason)},
		{name: "failed after sent", given: isSent, when: out(1, connection.MessageStatusFailed, "x"), err: connection.ErrNotInFlight},
		{name: "outcome unknown", given: inFlight, when: out(1, connection.MessageStatusUnknown, ""),
			then: []connection.Event{connection.MessageOutcomeUnknown{MessageID: msgID(1), Seq: 1, Cause: "d", At: at(2)}}},
		{name: "sent after outcome unknown", given: history(inFlight, connection.MessageOutcomeUnknown{MessageID: msgID(1), Seq: 1, At: t0}),
			when: out(1, connection.MessageStatusSent, ""), err: connection.ErrNotInFlight},
		{name: "delivered after sent", given: isSent, when: out(1, connection.MessageStatusDelivered, ""),
			then: []connection.Event{connection.MessageDelivered{MessageID: msgID(1), Seq: 1, DeliveredAt: at(2)}}},
		{name: "delivered acknowledges a message in flight", given: inFlight, when: out(1, connection.MessageStatusDelivered, ""),
			then: []connection.Event{connection.MessageDelivered{MessageID: msgID(1), Seq: 1, DeliveredAt: at(2)}},
			check: func(t *testing.T, c *connection.Connection, _ error) {
				if len(c.InFlight()) != 0 {
					t.Fatalf("in flight %v", c.InFlight())
				}
			}},
		{name: "read", given: isSent, when: out(1, connection.MessageStatusRead, ""),
			then: []connection.Event{connection.MessageRead{MessageID: msgID(1), Seq: 1, ReadAt: at(2)}}},
		{name: "delivered for a queued message", given: isSent, when: out(2, connection.MessageStatusDelivered, ""), err: connection.ErrNotInFlight},
		{name: "in-flight seq mismatch", given: inFlight, when: func(c *connection.Connection) ([]connection.Event, error) {
			return c.RecordOutcome(connection.Outcome{MessageID: msgID(1), Seq: 2, Kind: connection.MessageStatusSent}, at(2))
		}, err: connection.ErrNotInFlight},
		{name: "not an outcome", given: inFlight, when: out(1, connection.MessageStatusPurged, ""), err: connection.ErrInvalidCommand},
		{name: "recorded while clearing", given: history(inFlight, clearRequested(connection.WholeQueue, 2, []connection.SeqRange{{From: 2, To: 2}},
			[]connection.InFlightMessage{{MessageID: msgID(1), Seq: 1}})), when: out(1, connection.MessageStatusSent, ""),
			then: []connection.Event{connection.MessageSent{MessageID: msgID(1), Seq: 1, SentAt: at(2)}}},
	})
}

func TestHoldResume(t *testing.T) {
	hold := func(c *connection.Connection) ([]connection.Event, error) {
		return c.Hold(connection.HoldQueue{Note: "pause", Actor: "op"}, at(1))
	}
	resume := func(c *connection.Connection) ([]connection.Event, error) {
		return c.Resume(connection.ResumeQueue{Actor: "op"}, at(1))
	}
	req := clearRequested(connection.WholeQueue, 0, nil, nil)
	runDecisions(t, []decision{
		{name: "hold", given: base, when: hold,
			then: []connection.Event{connection.QueueHeld{Reason: connection.HoldByOperator, Note: "pause", Actor: "op", HeldAt: at(1)}}},
		{name: "hold twice", given: history(base, opHeld()), when: hold, err: connection.ErrAlreadyHeld},
		{name: "hold while clearing: held after the clear", given: history(base, req), when: hold,
			then: []connection.Event{connection.QueueHeld{Reason: connection.HoldByOperator, Note: "pause", Actor: "op", HeldAt: at(1)}},
			check: func(t *testing.T, c *connection.Connection, _ error) {
				if c.QueueStatus() != connection.QueueStatusClearing {
					t.Fatalf("queue = %v, want clearing", c.QueueStatus())
				}
				if err := c.Apply(cleared(req)); err != nil {
					t.Fatal(err)
				}
				if c.QueueStatus() != connection.QueueStatusHeld {
					t.Fatalf("after clear queue = %v, want held", c.QueueStatus())
				}
			}},
		{name: "resume", given: history(base, opHeld()), when: resume,
			then: []connection.Event{connection.QueueResumed{Reason: connection.ResumeByOperator, Actor: "op", ResumedAt: at(1)}}},
		// G7: an operator's resume waits for the lift or the new pairing; otherwise the whole
		// queue would go out unreviewed the moment the ban lifts.
		{name: "resume while banned is refused", given: history(base, banned()), when: resume,
			err: connection.ErrLinkStatus},
		{name: "resume after the lift", given: history(base, banned(), connection.BanLifted{Actor: "system", LiftedAt: at(0)}), when: resume,
			then: []connection.Event{connection.QueueResumed{Reason: connection.ResumeByOperator, Actor: "op", ResumedAt: at(1)}}},
		{name: "resume an open queue", given: base, when: resume, err: connection.ErrNotHeld},
		{name: "hold without actor", given: base, when: func(c *connection.Connection) ([]connection.Event, error) {
			return c.Hold(connection.HoldQueue{}, at(1))
		}, err: connection.ErrInvalidCommand, check: wantCode(connection.CodeMissingActor)},
	})
}

func TestClear(t *testing.T) {
	otherClear := connection.ClearIDFor(tenant, connID, "clear-2")
	request := func(scope connection.ClearScope) func(*connection.Connection) ([]connection.Event, error) {
		return func(c *connection.Connection) ([]connection.Event, error) {
			return c.RequestClear(connection.RequestClear{ClearID: clearID, Scope: scope, Reason: "ban", Actor: "op"}, t0)
		}
	}
	complete := func(id [16]byte) func(*connection.Connection) ([]connection.Event, error) {
		return func(c *connection.Connection) ([]connection.Event, error) {
			return c.CompleteClear(connection.CompleteClear{ClearID: id, Actor: "clearing-process"}, at(1))
		}
	}
	r := func(from, to uint64) connection.SeqRange { return connection.SeqRange{From: from, To: to} }
	fl := func(seq uint64) connection.InFlightMessage {
		return connection.InFlightMessage{MessageID: msgID(seq), Seq: seq}
	}
	whole3 := clearRequested(connection.WholeQueue, 3, []connection.SeqRange{r(1, 3)}, nil)
	scoped := clearRequested(connection.BroadcastScope(bcastID), 5, []connection.SeqRange{r(2, 4)}, nil)
	runDecisions(t, []decision{
		{name: "whole queue purges every pending message", given: history(base, queued(1), queued(2), queued(3)), when: request(connection.WholeQueue),
			then: []connection.Event{whole3}, check: func(t *testing.T, c *connection.Connection, _ error) {
				if c.QueueStatus() != connection.QueueStatusClearing || c.Pending() != 0 || c.Counters().Purged != 3 {
					t.Fatalf("queue %v pending %d counters %+v", c.QueueStatus(), c.Pending(), c.Counters())
				}
			}},
		{name: "in-flight messages are reported, not purged", given: history(base, queued(1), queued(2), queued(3), dispatched(msgID(1), 1)),
			when: request(connection.WholeQueue), then: []connection.Event{clearRequested(connection.WholeQueue, 3, []connection.SeqRange{r(2, 3)}, []connection.InFlightMessage{fl(1)})}},
		{name: "acknowledged messages are neither purged nor in flight", given: history(base, queued(1), queued(2), dispatched(msgID(1), 1), sent(msgID(1), 1)),
			when: request(connection.WholeQueue), then: []connection.Event{clearRequested(connection.WholeQueue, 2, []connection.SeqRange{r(2, 2)}, nil)}},
		{name: "empty queue clears nothing", given: base, when: request(connection.WholeQueue),
			then: []connection.Event{clearRequested(connection.WholeQueue, 0, nil, nil)}},
		{name: "second clear while clearing (G2)", given: history(base, queued(1), clearRequested(connection.WholeQueue, 1, []connection.SeqRange{r(1, 1)}, nil)),
			when: func(c *connection.Connection) ([]connection.Event, error) {
				return c.RequestClear(connection.RequestClear{ClearID: otherClear, Reason: "again", Actor: "op"}, at(1))
			}, err: connection.ErrQueueClearing, check: func(t *testing.T, _ *connection.Connection, err error) {
				if e := asError[*connection.ClearingError](t, err); e.ClearID != clearID {
					t.Fatalf("ClearingError = %+v", e)
				}
			}},
		{name: "the same clear again while clearing is a no-op", given: history(base, clearRequested(connection.WholeQueue, 0, nil, nil)),
			when: request(connection.WholeQueue), then: nil},
		{name: "scoped to a broadcast keeps 1:1 messages", given: history(base, queued(1), broadcast(bcastID, 2), queued(5)),
			when: request(connection.BroadcastScope(bcastID)), then: []connection.Event{scoped},
			check: func(t *testing.T, c *connection.Connection, _ error) {
				if c.Pending() != 2 || len(c.PendingBroadcasts()) != 0 {
					t.Fatalf("pending %d broadcasts %v", c.Pending(), c.PendingBroadcasts())
				}
			}},
		{name: "scoped to a partly dispatched broadcast", given: history(base, broadcast(bcastID, 1),
			dispatched(connection.BroadcastMessageID(bcastID, 0), 1)), when: request(connection.BroadcastScope(bcastID)),
			then: []connection.Event{clearRequested(connection.BroadcastScope(bcastID), 3, []connection.SeqRange{r(2, 3)},
				[]connection.InFlightMessage{{MessageID: connection.BroadcastMessageID(bcastID, 0), Seq: 1}})}},
		{name: "scoped to an unknown broadcast", given: history(base, queued(1)), when: request(connection.BroadcastScope(msgID(9))),
			err: connection.ErrBroadcastNotPending},
		{name: "scoped to a broadcast cleared already", given: history(base, queued(1), broadcast(bcastID, 2), queued(5), scoped, cleared(scoped)),
			when: func(c *connection.Connection) ([]connection.Event, error) {
				return c.RequestClear(connection.RequestClear{ClearID: otherClear, Scope: connection.BroadcastScope(bcastID), Reason: "x", Actor: "op"}, t0)
			}, err: connection.ErrBroadcastNotPending},
		{name: "whole queue after a scoped clear does not purge twice", given: history(base, queued(1), broadcast(bcastID, 2), queued(5), scoped, cleared(scoped)),
			when: func(c *connection.Connection) ([]connection.Event, error) {
				return c.RequestClear(connection.RequestClear{ClearID: otherClear, Reason: "ban", Actor: "op"}, t0)
			}, then: []connection.Event{connection.ClearQueueRequested{ClearID: otherClear, Scope: connection.WholeQueue, RequestedBy: "op",
				Reason: "ban", RequestedAt: t0, UpToSeq: 5, Purge: []connection.SeqRange{r(1, 1), r(5, 5)}, PurgeCount: 2, InFlight: []connection.InFlightMessage{}, Then: connection.ClearThenKeep}}},
		{name: "while banned: still banned and held after the clear", given: history(base, queued(1), banned()), when: request(connection.WholeQueue),
			then: []connection.Event{clearRequested(connection.WholeQueue, 1, []connection.SeqRange{r(1, 1)}, nil)},
			check: func(t *testing.T, c *connection.Connection, _ error) {
				if c.QueueStatus() != connection.QueueStatusClearing || c.LinkStatus() != connection.LinkStatusBanned {
					t.Fatalf("queue %v link %v", c.QueueStatus(), c.LinkStatus())
				}
				evs, err := c.CompleteClear(connection.CompleteClear{ClearID: clearID, Actor: "p"}, at(1))
				if err != nil {
					t.Fatal(err)
				}
				for _, e := range evs {
					if err := c.Apply(e); err != nil {
						t.Fatal(err)
					}
				}
				if c.QueueStatus() != connection.QueueStatusHeld || c.LinkStatus() != connection.LinkStatusBanned {
					t.Fatalf("after clear: queue %v link %v", c.QueueStatus(), c.LinkStatus())
				}
			}},
		{name: "reason required", given: base, when: func(c *connection.Connection) ([]connection.Event, error) {
			return c.RequestClear(connection.RequestClear{ClearID: clearID, Actor: "op"}, t0)
		}, err: connection.ErrInvalidCommand, check: wantCode(connection.CodeMissingReason)},
		{name: "complete reports the request's exact figures (G3)", given: history(base, queued(1), queued(2), queued(3), whole3),
			when: complete(clearID), then: []connection.Event{cleared(whole3)}, check: func(t *testing.T, c *connection.Connection, _ error) {
				if c.QueueStatus() != connection.QueueStatusOpen {
					t.Fatalf("queue = %v, want open", c.QueueStatus())
				}
			}},
		{name: "complete another clear", given: history(base, whole3), when: complete(otherClear), err: connection.ErrNoClearInProgress},
		{name: "complete twice", given: history(base, queued(1), queued(2), queued(3), whole3, cleared(whole3)), when: complete(clearID),
			err: connection.ErrNoClearInProgress},
	})
}

func TestPreparedBroadcast(t *testing.T) {
	c := load(t, base)
	cmd := connection.StartBroadcast{BroadcastID: bcastID, Recipients: []string{alice, bob, carol}, Text: "sale", Actor: "svc"}
	p, err := connection.PrepareBroadcast(cmd, c.Region())
	if err != nil {
		t.Fatal(err)
	}
	if c.Region() != "DE" || p.BroadcastID() != bcastID || len(p.Recipients()) != 3 {
		t.Fatalf("region %q prepared %v %v", c.Region(), p.BroadcastID(), p.Recipients())
	}
	direct, err := c.StartBroadcast(cmd, t0)
	if err != nil {
		t.Fatal(err)
	}
	runDecisions(t, []decision{
		{name: "prepared equals direct", given: base, when: func(c *connection.Connection) ([]connection.Event, error) {
			return c.StartPreparedBroadcast(p, t0)
		}, then: direct},
		{name: "prepared, then the queue is clearing (G2)", given: history(base, clearRequested(connection.WholeQueue, 0, nil, nil)),
			when: func(c *connection.Connection) ([]connection.Event, error) { return c.StartPreparedBroadcast(p, t0) },
			err:  connection.ErrQueueClearing},
		{name: "zero prepared broadcast", given: base, when: func(c *connection.Connection) ([]connection.Event, error) {
			return c.StartPreparedBroadcast(connection.PreparedBroadcast{}, t0)
		}, err: connection.ErrInvalidCommand},
		{name: "prepared for another region", given: base, when: func(c *connection.Connection) ([]connection.Event, error) {
			other, err := connection.PrepareBroadcast(cmd, "US")
			if err != nil {
				return nil, err
			}
			return c.StartPreparedBroadcast(other, t0)
		}, err: connection.ErrInvalidCommand},
	})
}

// TestBroadcastChunks checks that a broadcast larger than BroadcastChunk is decided as chunks
// that stand for exactly the MessageQueued events of the per-message form (ids, Seqs, indexes,
// expiry) and leave the aggregate as the per-message form does: old streams replay alike.
func TestBroadcastChunks(t *testing.T) {
	n := connection.BroadcastChunk*2 + 7
	rcpts := make([]string, n)
	for i := range rcpts {
		rcpts[i] = fmt.Sprintf("+4915112%06d", i)
	}
	chunked := load(t, history(registered(connection.OnBanHold), queued(1)))
	evs, err := chunked.StartBroadcast(connection.StartBroadcast{BroadcastID: bcastID, Recipients: rcpts, Text: "sale", TTL: time.Hour, Actor: "svc"}, t0)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 4 {
		t.Fatalf("%d events, want BroadcastStarted and 3 chunks", len(evs))
	}
	perMessage := load(t, history(registered(connection.OnBanHold), queued(1)))
	var msgs []connection.Event
	for i, e := range evs {
		if err := chunked.Apply(e); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			msgs = append(msgs, e)
			continue
		}
		b := e.(connection.BroadcastQueued)
		if len(b.Recipients) > connection.BroadcastChunk {
			t.Fatalf("chunk of %d recipients", len(b.Recipients))
		}
		msgs = append(msgs, connection.Expand(e)...)
	}
	if len(msgs) != n+1 {
		t.Fatalf("expanded to %d messages, want %d", len(msgs)-1, n)
	}
	for i, e := range msgs[1:] {
		q := e.(connection.MessageQueued)
		want := connection.MessageQueued{MessageID: connection.BroadcastMessageID(bcastID, i), Seq: 2 + uint64(i), Recipient: rcpts[i],
			BroadcastID: bcastID, BroadcastIndex: i, ExpiresAt: t0.Add(time.Hour), QueuedBy: "svc", QueuedAt: t0}
		if q != want {
			t.Fatalf("message %d = %+v, want %+v", i, q, want)
		}
	}
	for _, e := range msgs {
		if err := perMessage.Apply(e); err != nil {
			t.Fatal(err)
		}
	}
	if chunked.Pending() != perMessage.Pending() || chunked.LastSeq() != perMessage.LastSeq() ||
		chunked.Counters() != perMessage.Counters() || chunked.Version() != perMessage.Version()-int64(n)+3 {
		t.Fatalf("chunked: pending %d last %d %+v; per message: pending %d last %d %+v", chunked.Pending(), chunked.LastSeq(),
			chunked.Counters(), perMessage.Pending(), perMessage.LastSeq(), perMessage.Counters())
	}
	if err := connection.New().Apply(connection.BroadcastQueued{BroadcastID: bcastID, FirstSeq: 1}); err == nil {
		t.Fatal("applied a BroadcastQueued before registration")
	}
}

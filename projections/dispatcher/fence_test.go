package dispatcher_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/projections/dispatcher"
)

// counter returns the value of counter name{label=value} gathered from reg (0 if absent).
func counter(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// A retried send escapes no clear, hold or ban (issue 10.1, G1). The transport refuses the first
// hand-over (not connected); during the dispatcher's backoff something is recorded and over
// again before the retry: a clear requested and completed, a hold and a resume, a ban and its
// lift with a resume. The connection is back when the backoff ends. The message must not be
// handed over: it ends failed not_sent, and a clear's report lists it not sent, not in flight.
func TestRetryAfterDisruptionDuringBackoffNotHandedOver(t *testing.T) {
	for _, tc := range []struct {
		name    string
		disrupt func(h *harness) // records the disruption and its end
		clear   bool
	}{
		{name: "clear requested and completed", clear: true, disrupt: func(h *harness) {
			if _, err := h.clear.Handle(h.op(), commands.RequestClear{ConnectionID: "c1", IdempotencyKey: "during-backoff", Reason: "test"}); err != nil {
				h.t.Fatal(err)
			}
			h.eventually("QueueCleared", func() bool { return count[connection.QueueCleared](h.history("c1")) == 1 })
		}},
		{name: "hold that came and went", disrupt: func(h *harness) {
			if _, err := h.hold.Handle(h.op(), commands.HoldQueue{ConnectionID: "c1", Note: "pause"}); err != nil {
				h.t.Fatal(err)
			}
			if _, err := h.resume.Handle(h.op(), commands.ResumeQueue{ConnectionID: "c1", Note: "go on"}); err != nil {
				h.t.Fatal(err)
			}
		}},
		{name: "ban that came and went", disrupt: func(h *harness) {
			sys := commands.WithPrincipal(context.Background(), commands.SystemPrincipal(tenant))
			now := func() time.Time { return h.clock.Now() }
			ban, _ := commands.NewReportBanHandler(h.repo, now)
			lift, _ := commands.NewLiftBanHandler(h.repo, now)
			if _, err := ban.Handle(sys, commands.ReportBan{ConnectionID: "c1", Kind: connection.BanTemporary, ExpiresAt: h.clock.Now().Add(time.Hour), ReasonCode: "101"}); err != nil {
				h.t.Fatal(err)
			}
			if _, err := lift.Handle(sys, commands.LiftBan{ConnectionID: "c1", Reason: "expired"}); err != nil {
				h.t.Fatal(err)
			}
			if _, err := h.resume.Handle(h.op(), commands.ResumeQueue{ConnectionID: "c1", Note: "go on"}); err != nil {
				h.t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, openSQLite)
			reg := prometheus.NewRegistry()
			d := h.start(func(c *dispatcher.Config) { c.Registerer = reg })
			h.registerPaired("c1", d)
			if err := h.sim.Disconnect(context.Background(), "c1"); err != nil {
				t.Fatal(err)
			}
			m := h.enqueueOne("c1", "a", 0)
			// The first hand-over is refused; the dispatcher waits its backoff on the manual clock.
			h.eventually("first hand-over refused", func() bool {
				return counter(t, reg, "waqueue_dispatcher_sends_total", "outcome", dispatcher.OutcomeNotConnected) >= 1
			})
			if !h.clock.WaitForTimers(1, time.Minute) {
				t.Fatal("the dispatcher does not wait for its backoff")
			}
			tc.disrupt(h)
			if err := h.sim.Connect(context.Background(), "c1"); err != nil {
				t.Fatal(err)
			}
			h.eventually("link active", func() bool { return h.linkStatus("c1") == connection.LinkStatusActive })
			h.clock.Advance(time.Hour) // the backoff ends: the dispatcher retries or gives up
			h.eventually("message failed not_sent", func() bool {
				for _, r := range h.history("c1") {
					if f, ok := r.Event.(connection.MessageFailed); ok && f.MessageID == m.MessageID {
						return true
					}
				}
				return count[connection.MessageSent](h.history("c1")) > 0
			})
			h.idle(d, h.lastPosition("c1", dispatcher.WakeEventTypes...))
			if n := h.sim.SendCount(m.MessageID); n != 0 {
				t.Fatalf("message handed over %d times after the %s during its backoff", n, tc.name)
			}
			hist := h.history("c1")
			for _, r := range hist {
				switch e := r.Event.(type) {
				case connection.MessageFailed:
					if e.MessageID != m.MessageID || e.Code != connection.FailureNotSent {
						t.Errorf("failed %s with %q, want %s with %q", e.MessageID, e.Code, m.MessageID, connection.FailureNotSent)
					}
				case connection.QueueCleared:
					if e.InFlightCount != 0 || e.NotSentCount != 1 || e.NotSent[0].MessageID != m.MessageID {
						t.Errorf("report: in flight %d %v, not sent %d %v; want 0 in flight, %s not sent",
							e.InFlightCount, e.InFlight, e.NotSentCount, e.NotSent, m.MessageID)
					}
				}
			}
			if tc.clear && count[connection.QueueCleared](hist) != 1 {
				t.Error("no QueueCleared")
			}
			if count[connection.MessageFailed](hist) != 1 {
				t.Errorf("%d MessageFailed, want 1", count[connection.MessageFailed](hist))
			}
			h.checkInvariants("c1")
		})
	}
}

package connection_test

import (
	"testing"

	"github.com/waqueue/waqueue/domain/connection"
)

func TestHoldAndResumeForTenant(t *testing.T) {
	base := history(registered(connection.OnBanResume), paired(), queued(1))
	suspend := func(c *connection.Connection) ([]connection.Event, error) {
		return c.HoldForTenant(connection.HoldForTenant{Note: "unpaid", Actor: "key_op"}, at(1))
	}
	resume := func(c *connection.Connection) ([]connection.Event, error) {
		return c.ResumeForTenant(connection.ResumeForTenant{Actor: "key_op"}, at(2))
	}
	tenantHeld := connection.QueueHeld{Reason: connection.HoldOnTenantSuspended, Note: "unpaid", Actor: "key_op", HeldAt: at(1)}
	runDecisions(t, []decision{
		{name: "open queue is held", given: base, when: suspend, then: []connection.Event{tenantHeld}},
		{name: "held for the tenant already: nothing", given: history(base, tenantHeld), when: suspend, then: nil},
		{name: "held by an operator: stays so", given: history(base, opHeld()), when: suspend, then: nil},
		{name: "held by a ban: held again for the tenant", given: history(base, banned()), when: suspend, then: []connection.Event{tenantHeld}},
		{name: "resume of a tenant-held queue", given: history(base, tenantHeld), when: resume,
			then: []connection.Event{connection.QueueResumed{Reason: connection.ResumeOnTenantResumed, Actor: "key_op", ResumedAt: at(2)}}},
		{name: "resume leaves an operator's hold", given: history(base, opHeld()), when: resume, then: nil},
		{name: "resume of an open queue: nothing", given: base, when: resume, then: nil},
		{name: "a retired connection: nothing to hold", given: history(registered(connection.OnBanHold), paired(),
			connection.ConnectionRetired{Reason: "gone", RetiredBy: "op", RetiredAt: t0}), when: suspend, then: nil},
		{name: "resume while banned holds for the ban again", given: history(base, banned(), tenantHeld), when: resume,
			then: []connection.Event{connection.QueueHeld{Reason: connection.HoldOnBan, Note: "tenant resumed while banned", Actor: connection.SystemActor, HeldAt: at(2)}}},
		{name: "a ban lifted during the suspension does not resume (on_ban resume)", given: history(base, banned(), tenantHeld),
			when: func(c *connection.Connection) ([]connection.Event, error) {
				return c.LiftBan(connection.LiftBan{Actor: "system"}, at(2))
			},
			then: []connection.Event{connection.BanLifted{Actor: "system", LiftedAt: at(2)}}},
	})
}

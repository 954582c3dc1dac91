package connection

import "time"

// HoldForTenant holds the queue because the platform operator suspended the connection's
// tenant.
type HoldForTenant struct {
	Note  string
	Actor string
}

// HoldForTenant decides QueueHeld with reason tenant_suspended. It is idempotent: a queue held
// for the suspension already, or held by an operator or after a clear, gets no event (it stays
// held, and the tenant's resume leaves it so). A queue held automatically (ban, session loss)
// is held again with reason tenant_suspended, so that a ban lifted during the suspension does
// not resume it under the on_ban policy. Nothing is purged. A retired connection gets no
// event (it sends nothing).
func (c *Connection) HoldForTenant(cmd HoldForTenant, now time.Time) ([]Event, error) {
	if err := c.mustBeRegistered("hold"); err != nil {
		return nil, err
	}
	if c.link == LinkStatusRetired {
		return nil, nil // a retired connection sends nothing: nothing to hold or resume
	}
	if err := validateActor(cmd.Actor); err != nil {
		return nil, err
	}
	if err := validateNote("note", cmd.Note, false); err != nil {
		return nil, err
	}
	if c.hold != nil && !c.hold.Reason.IsAutomatic() {
		return nil, nil
	}
	return []Event{QueueHeld{Reason: HoldOnTenantSuspended, Note: cmd.Note, Actor: cmd.Actor, HeldAt: now.UTC()}}, nil
}

// ResumeForTenant resumes the queue because the platform operator resumed the connection's
// tenant.
type ResumeForTenant struct {
	Note  string
	Actor string
}

// ResumeForTenant undoes HoldForTenant: a queue held with reason tenant_suspended is resumed
// (QueueResumed, reason tenant_resumed), or, while the link is banned or its session invalid,
// held again for that reason (QueueHeld banned or session_invalid, G7: the lift or the new
// pairing then decides as the on_ban policy says). A queue not held, or held for another
// reason, gets no event.
func (c *Connection) ResumeForTenant(cmd ResumeForTenant, now time.Time) ([]Event, error) {
	if err := c.mustBeRegistered("resume"); err != nil {
		return nil, err
	}
	if c.link == LinkStatusRetired {
		return nil, nil // a retired connection sends nothing: nothing to hold or resume
	}
	if err := validateActor(cmd.Actor); err != nil {
		return nil, err
	}
	if err := validateNote("note", cmd.Note, false); err != nil {
		return nil, err
	}
	if c.hold == nil || c.hold.Reason != HoldOnTenantSuspended {
		return nil, nil
	}
	switch c.link {
	case LinkStatusBanned:
		return []Event{QueueHeld{Reason: HoldOnBan, Note: "tenant resumed while banned", Actor: SystemActor, HeldAt: now.UTC()}}, nil
	case LinkStatusSessionInvalid:
		return []Event{QueueHeld{Reason: HoldOnSessionInvalid, Note: "tenant resumed while the session is invalid", Actor: SystemActor, HeldAt: now.UTC()}}, nil
	}
	return []Event{QueueResumed{Reason: ResumeOnTenantResumed, Note: cmd.Note, Actor: cmd.Actor, ResumedAt: now.UTC()}}, nil
}

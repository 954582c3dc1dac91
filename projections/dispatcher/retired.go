package dispatcher

import (
	"context"
)

// isRetired reports whether the connection's loop found it retired before.
func (d *Dispatcher) isRetired(st *connState) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return st.retired
}

// releaseRetired stops dispatching for a retired connection for good: its loop ends at every
// later wake without claiming the lease, the lease is released (and not retried by the
// renewals), and the transport session is disconnected (the stored session stays; the API's
// logout ends it). A retired connection has nothing pending, so nothing is lost.
func (d *Dispatcher) releaseRetired(ctx context.Context, connID string, st *connState) {
	d.mu.Lock()
	st.retired = true
	held := st.lease.held
	st.lease.held, st.lease.foreign = false, false
	d.mu.Unlock()
	d.log.Info("connection retired; releasing its lease and transport session", "connection", connID)
	if held {
		if err := d.cfg.Leases.Release(ctx, []LeaseKey{leaseKey(connID)}); err != nil && ctx.Err() == nil {
			d.log.Warn("releasing the lease of a retired connection failed; it expires instead", "connection", connID, "err", err)
		}
		d.m.leasesHeld.Dec()
	}
	if err := d.cfg.Transport.Disconnect(context.WithoutCancel(ctx), connID); err != nil {
		d.log.Warn("disconnecting a retired connection failed", "connection", connID, "err", err)
	}
}

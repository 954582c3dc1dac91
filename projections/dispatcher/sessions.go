package dispatcher

import (
	"context"
	"errors"
	"time"

	"github.com/waqueue/waqueue/adapters/transport"
	"github.com/waqueue/waqueue/domain/connection"
)

// sessionEventTypes are the events the Dispatcher follows besides WakeEventTypes: a session
// event recorded through any node acts on the transport session of the node that runs it.
var sessionEventTypes = []string{connection.TypeSessionInvalidated}

// followedEventTypes are the event types of the Dispatcher's subscription.
func followedEventTypes() []string {
	return append(append([]string(nil), WakeEventTypes...), sessionEventTypes...)
}

// sessionEvent acts on this node's transport session after a session event recorded through
// any node (an API request is served by whichever node receives it, not necessarily the one
// holding the connection's lease):
//
//   - SessionPaired: the pairing client (on the node that served the pairing) was dropped at
//     the pairing's success; the node holding the lease connects the session (exclusive leases
//     only: without them the server's connector connects every paired connection). A node
//     without the lease does nothing; whoever claims it later connects on the claim.
//   - SessionInvalidated (an operator's logout through the API, or WhatsApp's): a node that
//     still runs a client of the connection ends it: a live client (connected, connecting,
//     banned) is logged out at WhatsApp (Transport.Unpair), a disconnected one is dropped. The
//     node serving the logout deletes the stored session itself, so no node connects it again.
//
// The transport calls that may take a network round trip (connect, logout) run in the
// background: the subscription must not wait for them. Dropping a disconnected client is local
// and runs inline.
func (d *Dispatcher) sessionEvent(ctx context.Context, typ, connID string) {
	switch typ {
	case connection.TypeSessionPaired:
		if !d.sessions() {
			return
		}
		d.mu.Lock()
		st := d.conns[connID]
		held := st != nil && !st.retired && d.validLocked(&st.lease, time.Now())
		d.mu.Unlock()
		if !held {
			return
		}
		d.background(func() {
			d.log.Info("connecting the session paired through the API", "connection", connID, "node", d.cfg.Leases.Node())
			if err := d.cfg.Transport.Connect(ctx, connID); err != nil && ctx.Err() == nil {
				d.log.Warn("connecting a newly paired session failed", "connection", connID, "err", err)
			}
		})
	case connection.TypeSessionInvalidated:
		// The event may be old (the subscription replays from the read models' checkpoint at
		// start): act only while the connection is still logged out, not paired again since.
		if link, err := d.linkStatus(ctx, connID); err != nil || link != connection.LinkStatusSessionInvalid {
			if err != nil && ctx.Err() == nil {
				d.log.Warn("reading a logged-out connection failed; its session is left as it is", "connection", connID, "err", err)
			}
			return
		}
		switch d.cfg.Transport.Status(connID).State {
		case transport.StateConnected, transport.StateConnecting, transport.StateTemporarilyBanned:
			d.background(func() {
				u, err := d.cfg.Transport.Unpair(context.WithoutCancel(ctx), connID)
				switch {
				case err == nil:
					d.log.Info("session ended after its logout was recorded", "connection", connID, "remote_logout", u.Remote)
				case errors.Is(err, transport.ErrPairingInProgress):
				default:
					d.log.Warn("ending the session of a logged-out connection failed", "connection", connID, "err", err)
				}
			})
		case transport.StateDisconnected:
			if err := d.cfg.Transport.Disconnect(ctx, connID); err != nil && ctx.Err() == nil {
				d.log.Warn("dropping the client of a logged-out connection failed", "connection", connID, "err", err)
			}
		}
	}
}

// background runs f on a goroutine Run waits for.
func (d *Dispatcher) background(f func()) {
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		f()
	}()
}

// linkStatus returns the connection's link status now (the Repository caches the aggregate).
func (d *Dispatcher) linkStatus(ctx context.Context, connID string) (connection.LinkStatus, error) {
	var link connection.LinkStatus
	err := d.cfg.Repository.View(ctx, connID, func(c *connection.Connection) error {
		link = c.LinkStatus()
		return nil
	})
	return link, err
}

package server

import (
	"context"
	"errors"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/transport"
	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/domain/connection"
)

// recordPairings is the transport's event handler on a node without a dispatcher (an API-only
// node, --no-dispatcher): such a node never connects a session, but it serves pairing requests,
// and a pairing's success must be recorded (SessionPaired) for the node holding the lease to
// connect the session. Paired becomes PairingSucceeded, as the system of the connection's
// tenant; a refusal (already paired, retired) is logged. Every other event is ignored.
func (n *Node) recordPairings(ctx context.Context) transport.Handler {
	return func(e transport.Event) {
		p, ok := e.(transport.Paired)
		if !ok || ctx.Err() != nil {
			return
		}
		tenant, _ := connection.SplitKey(p.ConnectionID)
		pctx := commands.WithPrincipal(ctx, commands.SystemPrincipal(tenant))
		_, err := n.Handlers.PairingSucceeded.Handle(pctx, commands.PairingSucceeded{ConnectionID: p.ConnectionID, JID: p.JID})
		switch {
		case err == nil:
		case commands.IsRefusal(err) || errors.Is(err, eventstore.ErrDuplicateEventID):
			n.log.Info("pairing not recorded: refused by the domain", "connection", p.ConnectionID, "err", err)
		default:
			n.log.Error("recording a pairing failed", "connection", p.ConnectionID, "err", err)
		}
	}
}

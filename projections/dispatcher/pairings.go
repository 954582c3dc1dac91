package dispatcher

import (
	"context"
	"errors"
	"log/slog"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/transport"
	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/domain/connection"
)

// PairingRecorder returns the transport's event handler of a node without a Dispatcher (an
// API-only node): such a node never connects a session, but it serves pairing requests, and a
// pairing's success must be recorded (SessionPaired) for the node holding the lease to connect
// the session. Paired becomes PairingSucceeded, as the system of the connection's tenant; a
// refusal (already paired, retired) is logged. Every other event is ignored, and so is every
// event once ctx ended.
func PairingRecorder(ctx context.Context, pair *commands.PairingSucceededHandler, log *slog.Logger) transport.Handler {
	return func(e transport.Event) {
		p, ok := e.(transport.Paired)
		if !ok || ctx.Err() != nil {
			return
		}
		tenant, _ := connection.SplitKey(p.ConnectionID)
		pctx := commands.WithPrincipal(ctx, commands.SystemPrincipal(tenant))
		_, err := pair.Handle(pctx, commands.PairingSucceeded{ConnectionID: p.ConnectionID, JID: p.JID})
		switch {
		case err == nil:
		case commands.IsRefusal(err) || errors.Is(err, eventstore.ErrDuplicateEventID):
			log.Info("pairing not recorded: refused by the domain", "connection", p.ConnectionID, "err", err)
		default:
			log.Error("recording a pairing failed", "connection", p.ConnectionID, "err", err)
		}
	}
}

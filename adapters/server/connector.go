package server

import (
	"context"
	"errors"
	"log/slog"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/transport"
	"github.com/waqueue/waqueue/domain/connection"
)

// connectAll keeps every registered connection connected to the transport when the dispatcher
// does not manage sessions (one dispatching node): it follows the global log from the start,
// filtered to ConnectionRegistered and SessionPaired, and calls Connect for each (the history at
// start, then each new registration and pairing). A connection without a stored session
// (transport.ErrNotPaired) waits for pairing through the API; the simulator pairs it silently.
// A pairing's own client ends at the pairing's success (the transport's contract): the session
// is connected here when the pairing is recorded. The dispatcher turns the transport's
// Paired/Connected events into domain events.
func connectAll(ctx context.Context, store eventstore.Store, t transport.Transport, log *slog.Logger) error {
	filter := eventstore.Filter{StreamPrefixes: []string{connection.StreamPrefix}, EventTypes: []string{connection.TypeConnectionRegistered, connection.TypeSessionPaired}}
	return store.Subscribe(ctx, eventstore.Start, filter, func(e eventstore.RecordedEvent) error {
		id, ok := connection.IDFromStream(e.Stream)
		if !ok {
			return nil
		}
		err := t.Connect(ctx, id)
		switch {
		case err == nil:
		case errors.Is(err, transport.ErrNotPaired):
			log.Debug("connection not paired yet; waiting for pairing", "connection", id)
		case ctx.Err() != nil:
			return ctx.Err()
		default:
			log.Warn("connect failed", "connection", id, "transport", t.Name(), "err", err)
		}
		return nil
	})
}

package dispatcher

import (
	"context"

	"github.com/waqueue/waqueue/commands"
)

// Issue 12: the head read. DispatchNext asks for the message at the head of the queue once per
// dispatch; read from the pending-queue projection each time, that was one statement (and one
// PostgreSQL transaction) per message, a sixth of the waqueue process's CPU in bench dispatch.
// A connection's loop instead reads the next windowSize positions in one statement and serves
// the following dispatches from memory.
//
// What makes that safe: a queue position (Seq) is given to one message once, and what
// DispatchNext takes from the read model (id, recipient, text, expiry) never changes after it
// was queued. Which position is the head, and whether it may be dispatched at all (cancelled,
// cleared, held, in flight elsewhere, stale epoch), is still decided by the domain on the
// aggregate at the expected revision (G1, the fence): the window only answers "what is the
// message at seq", and holds only messages the projection showed pending. A position it does
// not hold is read again from the projection. The window belongs to the loop (nothing else
// touches it) and is dropped when the loop ends, so only connections being worked hold one.

// windowSize is how many queue positions one read covers.
const windowSize = 16

// windowTextBytes bounds the distinct text one window keeps (a broadcast's messages share one
// string); the first message is always kept.
const windowTextBytes = 8 << 10

// window is the messages a loop read ahead, in Seq order.
type window struct {
	msgs []commands.QueuedMessage
}

// take returns the message at seq and drops every message before it.
func (w *window) take(seq uint64) (commands.QueuedMessage, bool) {
	i := 0
	for i < len(w.msgs) && w.msgs[i].Seq < seq {
		i++
	}
	w.msgs = w.msgs[i:]
	if len(w.msgs) == 0 {
		w.msgs = nil
		return commands.QueuedMessage{}, false
	}
	if w.msgs[0].Seq != seq {
		return commands.QueuedMessage{}, false
	}
	return w.msgs[0], true
}

// fill replaces the window's messages with msgs (in Seq order), sharing equal texts and keeping
// at most windowTextBytes of distinct text.
func (w *window) fill(msgs []commands.QueuedMessage) {
	w.msgs = w.msgs[:0]
	text := 0
	for i, m := range msgs {
		if i > 0 && m.Text == msgs[i-1].Text {
			m.Text = w.msgs[len(w.msgs)-1].Text
		} else {
			text += len(m.Text)
			if i > 0 && text > windowTextBytes {
				break
			}
		}
		w.msgs = append(w.msgs, m)
	}
}

// windowReader is the optional capability of a commands.QueuedMessages (QueueMessages) that
// reads a range of positions at once.
type windowReader interface {
	QueuedWindow(ctx context.Context, connKey string, seq uint64, n int) ([]commands.QueuedMessage, error)
}

type windowKey struct{}

// withWindow returns ctx carrying the loop's window for the DispatchNext it is passed to.
func withWindow(ctx context.Context, w *window) context.Context {
	return context.WithValue(ctx, windowKey{}, w)
}

// windowed is the dispatcher's commands.QueuedMessages: the configured one, read through the
// window of the calling loop (carried by ctx) when it can read ranges.
type windowed struct {
	inner commands.QueuedMessages
}

// QueuedMessage returns the message at seq from the caller's window, reading the window afresh
// (seq … seq+windowSize-1) when it does not hold seq. Without a window in ctx, or an inner
// QueuedMessages that reads no ranges, it is the inner QueuedMessage.
func (q windowed) QueuedMessage(ctx context.Context, connKey string, seq uint64) (commands.QueuedMessage, error) {
	w, _ := ctx.Value(windowKey{}).(*window)
	r, ok := q.inner.(windowReader)
	if w == nil || !ok || seq == 0 {
		return q.inner.QueuedMessage(ctx, connKey, seq)
	}
	if m, ok := w.take(seq); ok {
		return m, nil
	}
	msgs, err := r.QueuedWindow(ctx, connKey, seq, windowSize)
	if err != nil {
		return commands.QueuedMessage{}, err
	}
	w.fill(msgs)
	if m, ok := w.take(seq); ok {
		return m, nil
	}
	return commands.QueuedMessage{}, &NotProjectedError{ConnectionID: connKey, Seq: seq}
}

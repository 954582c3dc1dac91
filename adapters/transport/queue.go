package transport

import "sync"

// EventQueue delivers events to a Handler from one goroutine, in the order they were emitted, so that
// adapters can emit from any goroutine (whatsmeow calls its handlers from several) without blocking
// on the handler. Events emitted while no handler is set are kept until one is. The zero value is not
// usable; use NewEventQueue. Adapters embed it to implement Transport.SetHandler.
type EventQueue struct {
	mu      sync.Mutex
	cond    *sync.Cond
	pending []Event
	handler Handler
	closed  bool
	done    chan struct{}
}

// NewEventQueue starts the delivering goroutine; Close stops it.
func NewEventQueue() *EventQueue {
	q := &EventQueue{done: make(chan struct{})}
	q.cond = sync.NewCond(&q.mu)
	go q.run()
	return q
}

// SetHandler sets or replaces the handler.
func (q *EventQueue) SetHandler(h Handler) {
	q.mu.Lock()
	q.handler = h
	q.mu.Unlock()
	q.cond.Broadcast()
}

// Emit queues e for delivery; it never blocks on the handler. After Close it drops e.
func (q *EventQueue) Emit(e Event) {
	q.mu.Lock()
	if !q.closed {
		q.pending = append(q.pending, e)
	}
	q.mu.Unlock()
	q.cond.Signal()
}

// Close delivers nothing more and waits for a running handler call to return.
func (q *EventQueue) Close() {
	q.mu.Lock()
	q.closed = true
	q.pending = nil
	q.mu.Unlock()
	q.cond.Broadcast()
	<-q.done
}

func (q *EventQueue) run() {
	defer close(q.done)
	for {
		q.mu.Lock()
		for !q.closed && (q.handler == nil || len(q.pending) == 0) {
			q.cond.Wait()
		}
		if q.closed {
			q.mu.Unlock()
			return
		}
		e, h := q.pending[0], q.handler
		q.pending[0] = nil
		q.pending = q.pending[1:]
		q.mu.Unlock()
		h(e)
	}
}

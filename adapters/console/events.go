package console

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/waqueue/waqueue/adapters/apikeys"
	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/projections"
)

// hub fans the cards projection's commits out to the open live-update streams. A slow stream
// never holds the projection up: each subscriber keeps the set of changed connection keys
// (connection.Key: every tenant's, each stream keeps its own tenant's) until it takes them
// (coalescing bursts), and is woken through a channel of one.
type hub struct {
	mu   sync.Mutex
	subs map[*subscriber]struct{}
}

type subscriber struct {
	mu      sync.Mutex
	pending map[string]struct{}
	wake    chan struct{}
}

func newHub() *hub { return &hub{subs: map[*subscriber]struct{}{}} }

func (h *hub) subscribe() *subscriber {
	s := &subscriber{pending: map[string]struct{}{}, wake: make(chan struct{}, 1)}
	h.mu.Lock()
	h.subs[s] = struct{}{}
	h.mu.Unlock()
	return s
}

func (h *hub) unsubscribe(s *subscriber) {
	h.mu.Lock()
	delete(h.subs, s)
	h.mu.Unlock()
}

func (h *hub) publish(ids []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		s.mu.Lock()
		for _, id := range ids {
			s.pending[id] = struct{}{}
		}
		s.mu.Unlock()
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

func (s *subscriber) take() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]string, 0, len(s.pending))
	for id := range s.pending {
		ids = append(ids, id)
	}
	clear(s.pending)
	return ids
}

// cardEvent is the data of a "card" server-sent event: the card's HTML (the same template
// the page renders) and its statuses, for scripts waiting on a clear.
type cardEvent struct {
	ID       string `json:"id"`
	HTML     string `json:"html"`
	Link     string `json:"link"`
	Queue    string `json:"queue"`
	Clearing bool   `json:"clearing"`
	// ClearID is the clear in progress ("" when none).
	ClearID string `json:"clear_id,omitempty"`
	// Sent is when the server pushed the event (Unix milliseconds), for the latency the
	// browser logs.
	Sent int64 `json:"sent"`
}

// events is the live-update stream (text/event-stream) of the signed-in tenant's cards: every
// card first, then each card again whenever the cards projection commits a change to it. The
// session's key is checked again before a push (at most once a second) and at every
// heartbeat; a revoked key ends the stream with a "signedout" event.
func (c *Console) events(w http.ResponseWriter, r *http.Request) error {
	u := userOf(r.Context())
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)

	sub := c.hub.subscribe()
	defer c.hub.unsubscribe(sub)

	send := func(event string, v any) error {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, b); err != nil {
			return err
		}
		return rc.Flush()
	}
	push := func(cards []projections.Card) error {
		for _, card := range cards {
			html, err := c.renderCard(c.viewCard(r.Context(), card, u.principal))
			if err != nil {
				return err
			}
			ev := cardEvent{ID: card.ConnectionID, HTML: html, Link: card.LinkStatus.String(),
				Queue: card.QueueStatus.String(), Clearing: card.Clear != nil, Sent: time.Now().UnixMilli()}
			if card.Clear != nil {
				ev.ClearID = card.Clear.ClearID.String()
			}
			if err := send("card", ev); err != nil {
				return err
			}
		}
		return nil
	}
	// recheck authenticates the session again (at most once a second: a busy connection's
	// card changes many times a second); false ends the stream.
	var checked time.Time
	recheck := func() bool {
		if time.Since(checked) < time.Second {
			return true
		}
		checked = time.Now()
		nu, err := c.authenticate(r)
		if err != nil {
			switch {
			case errors.Is(err, commands.ErrUnauthenticated):
				_ = send("signedout", map[string]string{"reason": "session ended"})
			case errors.Is(err, apikeys.ErrTenantSuspended):
				_ = send("signedout", map[string]string{"reason": "tenant suspended"})
			}
			return false
		}
		u = nu
		return true
	}

	all, err := c.d.Cards.List(r.Context(), c.d.DB, u.principal.TenantID)
	if err != nil {
		return nil // headers are written; the browser reconnects
	}
	if push(all) != nil || send("ready", map[string]int{"cards": len(all)}) != nil {
		return nil
	}
	tick := time.NewTicker(c.d.Heartbeat)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return nil
		case <-c.done:
			return nil
		case <-tick.C:
			if !recheck() {
				return nil
			}
			if _, err := fmt.Fprint(w, ": ping\n\n"); err != nil || rc.Flush() != nil {
				return nil
			}
		case <-sub.wake:
			keys := sub.take()
			if !recheck() {
				return nil
			}
			var cards []projections.Card
			for _, key := range keys {
				tenant, id := connection.SplitKey(key)
				if tenant != u.principal.TenantID {
					// Another tenant's connection: nothing to say. (Cards.Card would not tell:
					// the default tenant's keys are bare ids, which it reads as this tenant's
					// connection of that id, pushed then whenever the other one changes.)
					continue
				}
				card, err := c.d.Cards.Card(r.Context(), c.d.DB, tenant, id)
				if errors.Is(err, projections.ErrNotFound) {
					continue // not in the read model (yet)
				}
				if err != nil {
					c.log.WarnContext(r.Context(), "console: live card", "connection", id, "error", err)
					continue
				}
				cards = append(cards, card)
			}
			if push(cards) != nil {
				return nil
			}
		}
	}
}

package httpapi

import (
	"context"
	"net/http"
	"strconv"
	"strings"

	"github.com/waqueue/waqueue/adapters/eventstore"
)

// Read-your-writes is explicit. A command answers as soon as its events are durable, with the
// global position of its last event in the Waqueue-Position header. A read that must reflect a
// write sends that position back as Waqueue-Min-Position (or ?min_position=): the read then
// waits, at most Limits.ReadYourWrites, until every read model it reads has applied every event
// at or before the position, and says whether it got there in Waqueue-Position-Reached
// ("true"/"false"). On "false" the answer is what the read models hold now (possibly older
// than the client's write); it is never an error.
const (
	HeaderPosition        = "Waqueue-Position"
	HeaderMinPosition     = "Waqueue-Min-Position"
	HeaderPositionReached = "Waqueue-Position-Reached"
	queryMinPosition      = "min_position"
)

// FormatPosition is the wire form of a position: "<commit>/<prepare>" (eventstore.Position's
// String).
func FormatPosition(p eventstore.Position) string { return p.String() }

// ParsePosition parses FormatPosition's form.
func ParsePosition(s string) (eventstore.Position, bool) {
	c, p, ok := strings.Cut(s, "/")
	if !ok {
		return eventstore.Position{}, false
	}
	commit, err1 := strconv.ParseUint(c, 10, 64)
	prepare, err2 := strconv.ParseUint(p, 10, 64)
	if err1 != nil || err2 != nil {
		return eventstore.Position{}, false
	}
	return eventstore.Position{Commit: commit, Prepare: prepare}, true
}

// setPosition tells the client where its write landed (nothing for a write that appended
// nothing).
func setPosition(w http.ResponseWriter, pos eventstore.Position) {
	if !pos.IsZero() {
		w.Header().Set(HeaderPosition, FormatPosition(pos))
	}
}

// ownView waits, at most Limits.ReadYourWrites, for the read models of names to reach pos: used
// by the commands whose answer is a read-model view of what they changed (register, settings,
// hold, resume answer the card), so that the answer shows the change. Operator-rate commands
// only; enqueue, broadcast and clear answer from the command's result and never wait. A timeout
// only means the view may be older, which Waqueue-Position-Reached: false tells the client (it
// may read the card again with Waqueue-Min-Position); the command is durable either way.
func (s *server) ownView(w http.ResponseWriter, ctx context.Context, pos eventstore.Position, names ...string) {
	if pos.IsZero() || s.d.Limits.ReadYourWrites < 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, s.d.Limits.ReadYourWrites)
	defer cancel()
	err := s.d.Runner.WaitReached(ctx, names, pos)
	if err != nil {
		s.log.DebugContext(ctx, "read models lag behind a write", "position", pos.String(), "error", err)
	}
	w.Header().Set(HeaderPositionReached, strconv.FormatBool(err == nil))
}

// minPosition returns the position the request asks its read to reflect (ok false when none).
// A malformed one is 400 invalid_request.
func minPosition(r *http.Request) (eventstore.Position, bool, error) {
	v, field := r.Header.Get(HeaderMinPosition), HeaderMinPosition
	if q := r.URL.Query().Get(queryMinPosition); q != "" {
		v, field = q, queryMinPosition
	}
	if v == "" {
		return eventstore.Position{}, false, nil
	}
	pos, ok := ParsePosition(strings.TrimSpace(v))
	if !ok {
		return eventstore.Position{}, false, &Problem{Status: http.StatusBadRequest, Code: CodeInvalidRequest, Field: field,
			Detail: "must be a position as answered in Waqueue-Position (<commit>/<prepare>)"}
	}
	return pos, true, nil
}

// awaitMinPosition makes a read route honour Waqueue-Min-Position: it waits, bounded, for the
// read models of names to reach the position and sets Waqueue-Position-Reached.
func (s *server) awaitMinPosition(w http.ResponseWriter, r *http.Request, names []string) error {
	pos, ok, err := minPosition(r)
	if err != nil || !ok {
		return err
	}
	reached := false
	if s.d.Limits.ReadYourWrites >= 0 {
		ctx, cancel := context.WithTimeout(r.Context(), s.d.Limits.ReadYourWrites)
		err := s.d.Runner.WaitReached(ctx, names, pos)
		cancel()
		reached = err == nil
		if err != nil {
			if r.Context().Err() != nil {
				return r.Context().Err()
			}
			s.log.DebugContext(r.Context(), "read models did not reach the asked position", "position", pos.String(), "error", err)
		}
	}
	w.Header().Set(HeaderPositionReached, strconv.FormatBool(reached))
	return nil
}

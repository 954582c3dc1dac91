package httpapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/projections"
)

type broadcastQueueView struct {
	BroadcastID uuid.UUID `json:"broadcast_id"`
	FirstSeq    uint64    `json:"first_seq"`
	LastSeq     uint64    `json:"last_seq"`
	Total       uint64    `json:"total"`
	Pending     uint64    `json:"pending"`
}

type pendingView struct {
	MessageID   uuid.UUID  `json:"message_id"`
	Seq         uint64     `json:"seq"`
	BroadcastID *uuid.UUID `json:"broadcast_id,omitempty"`
	Recipient   string     `json:"recipient"`
	QueuedAt    time.Time  `json:"queued_at"`
	ExpiresAt   time.Time  `json:"expires_at,omitzero"`
}

func viewBroadcastQueues(bs []projections.BroadcastQueue) []broadcastQueueView {
	out := make([]broadcastQueueView, 0, len(bs))
	for _, b := range bs {
		out = append(out, broadcastQueueView{BroadcastID: b.BroadcastID, FirstSeq: b.FirstSeq, LastSeq: b.LastSeq, Total: b.Total, Pending: b.Pending})
	}
	return out
}

func (s *server) getQueue(w http.ResponseWriter, r *http.Request) error {
	q, err := s.d.Queue.Summary(r.Context(), s.d.DB, principal(r).TenantID, r.PathValue("id"))
	if err != nil {
		return err
	}
	v := map[string]any{
		"connection_id": q.ConnectionID, "status": q.Status.String(), "pending": q.Pending, "in_flight": q.InFlight,
		"last_seq": q.LastSeq, "broadcasts": viewBroadcastQueues(q.Broadcasts), "updated_at": q.UpdatedAt,
	}
	if q.ClearID != uuid.Nil {
		v["clear_id"] = q.ClearID
	}
	if q.Oldest != nil {
		o := q.Oldest
		v["oldest"] = pendingView{MessageID: o.MessageID, Seq: o.Seq, BroadcastID: optID(o.BroadcastID), Recipient: o.Recipient,
			QueuedAt: o.QueuedAt, ExpiresAt: o.ExpiresAt}
	}
	return writeJSON(w, http.StatusOK, v)
}

// clearPreview shows what a clear would purge now: the total and each broadcast's share, and the
// phone number to type as confirmation.
func (s *server) clearPreview(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	c, err := s.card(r, id)
	if err != nil {
		return err
	}
	q, err := s.d.Queue.Summary(r.Context(), s.d.DB, principal(r).TenantID, id)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{
		"connection_id": id, "phone": c.Phone, "queue_status": q.Status.String(),
		"total": q.Pending, "in_flight": q.InFlight, "broadcasts": viewBroadcastQueues(q.Broadcasts),
		"confirm": "POST /v1/connections/" + id + `/queue/clear with "confirm" set to ` + c.Phone,
	})
}

// digits keeps the digits of a phone number, so that "+49 170 1234567" confirms "+491701234567".
func digits(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r >= '0' && r <= '9' {
			b.WriteRune(r)
		}
	}
	return b.String()
}

type clearResponse struct {
	ClearID      uuid.UUID `json:"clear_id"`
	ConnectionID string    `json:"connection_id"`
	Status       string    `json:"status"`
}

func (s *server) clearQueue(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	_, b, err := readBody(w, r, s.d.Limits.MaxJSONBody, "application/json")
	if err != nil {
		return err
	}
	req, broadcastID, err := decodeClear(b)
	if err != nil {
		return err
	}
	c, err := s.card(r, id)
	if err != nil {
		return err
	}
	if d := digits(req.Confirm); d == "" || d != digits(c.Phone) {
		return &Problem{Status: http.StatusUnprocessableEntity, Code: CodeConfirmMismatch, Field: "confirm",
			Detail: "confirm must be the connection's phone number"}
	}
	res, err := s.d.Handlers.RequestClear.Handle(r.Context(), commands.RequestClear{
		ConnectionID: id, IdempotencyKey: idempotencyKey(r), BroadcastID: broadcastID, Reason: req.Reason,
	})
	if err != nil {
		return err
	}
	s.settle(r.Context(), res.Position, projections.CardsName, projections.QueueName)
	markReplay(w, res.Replayed)
	w.Header().Set("Location", "/v1/connections/"+id+"/clears/"+res.ClearID.String())
	return writeJSON(w, http.StatusAccepted, clearResponse{ClearID: res.ClearID, ConnectionID: id, Status: "pending"})
}

// clearScanLimit bounds how many of a connection's latest events GET …/clears/{clear_id} reads
// to find the clear (its request, or its report, which follows the request).
const clearScanLimit = 200_000

// getClear answers the clear's report (QueueCleared) once it is done, and status pending with
// the request before. It reads the connection's stream backwards: the report, if any, comes
// after the request, so the scan stops at whichever of the two it meets first.
func (s *server) getClear(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if _, err := s.card(r, id); err != nil {
		return err
	}
	clearID, err := pathUUID(r, "clear_id")
	if err != nil {
		return err
	}
	stream := connection.StreamName(id)
	from := eventstore.End
	const page = 1000
	for scanned := 0; scanned < clearScanLimit; {
		evs, err := s.d.Store.ReadStream(r.Context(), stream, eventstore.Backwards, from, page)
		if errors.Is(err, eventstore.ErrStreamNotFound) {
			return projections.ErrNotFound
		}
		if err != nil {
			return err
		}
		for _, e := range evs {
			switch e.Type {
			case connection.TypeQueueCleared, connection.TypeClearQueueRequested:
				var probe struct {
					ClearID uuid.UUID `json:"clear_id"`
				}
				if json.Unmarshal(e.Data, &probe) != nil || probe.ClearID != clearID {
					continue
				}
				status := "done"
				key := "report"
				if e.Type == connection.TypeClearQueueRequested {
					status, key = "pending", "request"
				}
				return writeJSON(w, http.StatusOK, map[string]any{
					"clear_id": clearID, "connection_id": id, "status": status, key: e.Data,
				})
			}
		}
		scanned += len(evs)
		if len(evs) < page || evs[len(evs)-1].Revision == 0 {
			break
		}
		from = evs[len(evs)-1].Revision - 1
	}
	return projections.ErrNotFound
}

func (s *server) holdQueue(w http.ResponseWriter, r *http.Request) error {
	return s.holdOrResume(w, r, true)
}

func (s *server) resumeQueue(w http.ResponseWriter, r *http.Request) error {
	return s.holdOrResume(w, r, false)
}

func (s *server) holdOrResume(w http.ResponseWriter, r *http.Request, hold bool) error {
	id := r.PathValue("id")
	_, b, err := readBody(w, r, s.d.Limits.MaxJSONBody, "application/json")
	if err != nil {
		return err
	}
	req, err := decodeNote(b)
	if err != nil {
		return err
	}
	var res commands.Result
	if hold {
		res, err = s.d.Handlers.HoldQueue.Handle(r.Context(), commands.HoldQueue{ConnectionID: id, Note: req.Note})
	} else {
		res, err = s.d.Handlers.ResumeQueue.Handle(r.Context(), commands.ResumeQueue{ConnectionID: id, Note: req.Note})
	}
	if err != nil {
		return err
	}
	s.settle(r.Context(), res.Position, projections.CardsName, projections.QueueName)
	c, err := s.card(r, id)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, viewCard(c))
}

// queryInt parses an optional non-negative integer query parameter.
func queryInt(r *http.Request, name string, def, max int64) (int64, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || (max > 0 && n > max) {
		return 0, &Problem{Status: http.StatusBadRequest, Code: CodeInvalidRequest, Field: name,
			Detail: "must be a non-negative integer" + map[bool]string{true: " up to " + strconv.FormatInt(max, 10), false: ""}[max > 0]}
	}
	return n, nil
}

type historyEvent struct {
	Revision      uint64          `json:"revision"`
	Position      string          `json:"position"`
	ID            uuid.UUID       `json:"id"`
	Type          string          `json:"type"`
	RecordedAt    time.Time       `json:"recorded_at"`
	Actor         string          `json:"actor,omitempty"`
	CorrelationID string          `json:"correlation_id,omitempty"`
	Data          json.RawMessage `json:"data"`
}

// history pages through the connection's events by revision: cursor is the first revision to
// read (default 0), next_cursor the one after the page ("" at the end).
func (s *server) history(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	cursor, err := queryInt(r, "cursor", 0, 0)
	if err != nil {
		return err
	}
	limit, err := queryInt(r, "limit", 100, 1000)
	if err != nil {
		return err
	}
	if limit == 0 {
		limit = 100
	}
	if _, err := s.card(r, id); err != nil {
		return err
	}
	evs, err := s.d.Store.ReadStream(r.Context(), connection.StreamName(id), eventstore.Forwards, uint64(cursor), int(limit)+1)
	if errors.Is(err, eventstore.ErrStreamNotFound) {
		return projections.ErrNotFound
	}
	if err != nil {
		return err
	}
	next := ""
	if len(evs) > int(limit) {
		evs = evs[:limit]
		next = strconv.FormatUint(evs[len(evs)-1].Revision+1, 10)
	}
	out := make([]historyEvent, 0, len(evs))
	for _, e := range evs {
		out = append(out, historyEvent{Revision: e.Revision, Position: e.Position.String(), ID: e.ID, Type: e.Type,
			RecordedAt: e.RecordedAt, Actor: e.Metadata.Actor, CorrelationID: e.Metadata.CorrelationID, Data: e.Data})
	}
	return writeJSON(w, http.StatusOK, map[string]any{"connection_id": id, "events": out, "next_cursor": next})
}

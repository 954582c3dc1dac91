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
		ConnectionID: id, IdempotencyKey: idempotencyKey(r), BroadcastID: broadcastID, Reason: req.Reason, Then: req.then,
	})
	if err != nil {
		return err
	}
	setPosition(w, res.Position)
	markReplay(w, res.Replayed)
	w.Header().Set("Location", "/v1/connections/"+id+"/clears/"+res.ClearID.String())
	return writeJSON(w, http.StatusAccepted, clearResponse{ClearID: res.ClearID, ConnectionID: id, Status: "pending"})
}

type clearReportView struct {
	ClearID       uuid.UUID                    `json:"clear_id"`
	ConnectionID  string                       `json:"connection_id"`
	Status        string                       `json:"status"`
	Scope         connection.ClearScope        `json:"scope"`
	RequestedBy   string                       `json:"requested_by"`
	Reason        string                       `json:"reason"`
	RequestedAt   time.Time                    `json:"requested_at"`
	Then          string                       `json:"then"`
	QueueAfter    string                       `json:"queue_after,omitempty"`
	UpToSeq       uint64                       `json:"up_to_seq"`
	PurgedCount   uint64                       `json:"purged_count"`
	Purged        []connection.SeqRange        `json:"purged"`
	InFlightCount uint64                       `json:"in_flight_count"`
	InFlight      []connection.InFlightMessage `json:"in_flight"`
	NotSentCount  uint64                       `json:"not_sent_count"`
	NotSent       []connection.InFlightMessage `json:"not_sent"`
	CompletedBy   string                       `json:"completed_by,omitempty"`
	CompletedAt   time.Time                    `json:"completed_at,omitzero"`
	Request       json.RawMessage              `json:"request,omitempty"`
	Report        json.RawMessage              `json:"report,omitempty"`
}

// clearStatus is the API's name of a clear's status: pending until its report is recorded,
// then done.
func clearStatus(s string) string {
	if s == projections.ClearStatusCompleted {
		return "done"
	}
	return "pending"
}

func viewClearReport(r projections.ClearReport) clearReportView {
	return clearReportView{ClearID: r.ClearID, ConnectionID: r.ConnectionID, Status: clearStatus(r.Status), Scope: r.Scope,
		RequestedBy: r.RequestedBy, Reason: r.Reason, RequestedAt: r.RequestedAt, Then: r.Then.String(),
		QueueAfter: r.QueueAfter.String(), UpToSeq: r.UpToSeq, PurgedCount: r.PurgedCount, Purged: r.Purged,
		InFlightCount: r.InFlightCount, InFlight: r.InFlight, NotSentCount: r.NotSentCount, NotSent: r.NotSent, CompletedBy: r.CompletedBy, CompletedAt: r.CompletedAt,
		Request: r.Request, Report: r.Report}
}

// getClear answers a clear from the clears read model: status pending with the request, or
// done with the report (QueueCleared) as well, and the figures of both flattened. Another
// connection's or tenant's clear is 404.
func (s *server) getClear(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if _, err := s.card(r, id); err != nil {
		return err
	}
	clearID, err := pathUUID(r, "clear_id")
	if err != nil {
		return err
	}
	rep, err := s.d.Clears.ClearReport(r.Context(), s.d.DB, principal(r).TenantID, id, clearID)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, viewClearReport(rep))
}

// listClears answers a page of the connection's clears, newest first: cursor is a previous
// page's next_cursor ("" at the end).
func (s *server) listClears(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	limit, err := queryInt(r, "limit", 50, 1000)
	if err != nil {
		return err
	}
	if _, err := s.card(r, id); err != nil {
		return err
	}
	page, err := s.d.Clears.ClearReports(r.Context(), s.d.DB, principal(r).TenantID, id, r.URL.Query().Get("cursor"), int(limit))
	if err != nil {
		return badCursor(err)
	}
	out := make([]clearReportView, 0, len(page.Clears))
	for _, c := range page.Clears {
		out = append(out, viewClearReport(c))
	}
	return writeJSON(w, http.StatusOK, map[string]any{"connection_id": id, "clears": out, "next_cursor": page.NextCursor})
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
	setPosition(w, res.Position)
	s.ownView(w, r.Context(), res.Position, projections.CardsName)
	c, err := s.card(r, id)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, viewCard(c, s.d.Now()))
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
	evs, err := s.d.Store.ReadStream(r.Context(), connection.StreamName(connKey(r)), eventstore.Forwards, uint64(cursor), int(limit)+1)
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

package httpapi

import (
	"net/http"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/projections"
)

// idempotencyKey returns the request's Idempotency-Key, or a fresh random one when it has none
// (such a request is not idempotent: a retry queues again). A key too long is refused by the
// command with missing_idempotency_key (422).
func idempotencyKey(r *http.Request) string {
	if k := r.Header.Get("Idempotency-Key"); k != "" {
		return k
	}
	return "auto-" + uuid.NewString()
}

func markReplay(w http.ResponseWriter, replayed bool) {
	if replayed {
		w.Header().Set("Idempotent-Replayed", "true")
	}
}

// enqueueResponse is the body of 202 on POST …/messages; a replay answers the same body.
type enqueueResponse struct {
	MessageID    uuid.UUID `json:"message_id"`
	ConnectionID string    `json:"connection_id"`
}

func (s *server) enqueue(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	_, b, err := readBody(w, r, s.d.Limits.MaxJSONBody, "application/json")
	if err != nil {
		return err
	}
	req, ttl, err := decodeEnqueue(b)
	if err != nil {
		return err
	}
	res, err := s.d.Handlers.EnqueueMessage.Handle(r.Context(), commands.EnqueueMessage{
		ConnectionID: id, IdempotencyKey: idempotencyKey(r), Recipient: req.Recipient, Text: req.Text, TTL: ttl,
	})
	if err != nil {
		return err
	}
	setPosition(w, res.Position)
	markReplay(w, res.Replayed)
	w.Header().Set("Location", "/v1/messages/"+res.MessageID.String())
	return writeJSON(w, http.StatusAccepted, enqueueResponse{MessageID: res.MessageID, ConnectionID: id})
}

type statusChangeView struct {
	Status string    `json:"status"`
	At     time.Time `json:"at"`
}

type messageView struct {
	ID           uuid.UUID          `json:"id"`
	ConnectionID string             `json:"connection_id"`
	Seq          uint64             `json:"seq"`
	BroadcastID  *uuid.UUID         `json:"broadcast_id,omitempty"`
	Recipient    string             `json:"recipient"`
	Status       string             `json:"status"`
	History      []statusChangeView `json:"history"`
	ClearID      *uuid.UUID         `json:"clear_id,omitempty"`
	FailureCode  string             `json:"failure_code,omitempty"`
	Detail       string             `json:"detail,omitempty"`
	ServerID     string             `json:"server_id,omitempty"`
}

func optID(id uuid.UUID) *uuid.UUID {
	if id == uuid.Nil {
		return nil
	}
	return &id
}

// pathUUID parses a path id; a malformed id is simply not found.
func pathUUID(r *http.Request, name string) (uuid.UUID, error) {
	id, err := uuid.Parse(r.PathValue(name))
	if err != nil {
		return uuid.Nil, projections.ErrNotFound
	}
	return id, nil
}

func (s *server) getMessage(w http.ResponseWriter, r *http.Request) error {
	id, err := pathUUID(r, "id")
	if err != nil {
		return err
	}
	m, err := s.d.Messages.Message(r.Context(), s.d.DB, principal(r).TenantID, id)
	if err != nil {
		return err
	}
	v := messageView{ID: m.MessageID, ConnectionID: m.ConnectionID, Seq: m.Seq, BroadcastID: optID(m.BroadcastID),
		Recipient: m.Recipient, Status: m.Status.String(), History: []statusChangeView{}, ClearID: optID(m.ClearID),
		FailureCode: m.FailureCode, Detail: m.Detail, ServerID: m.ServerID}
	for _, h := range m.History {
		v.History = append(v.History, statusChangeView{Status: h.Status.String(), At: h.At})
	}
	return writeJSON(w, http.StatusOK, v)
}

type broadcastResponse struct {
	BroadcastID  uuid.UUID `json:"broadcast_id"`
	ConnectionID string    `json:"connection_id"`
	Count        int       `json:"count"`
	// NotOnWhatsApp lists, with check_recipients, the recipients (E.164, each once) left out
	// because they have no WhatsApp account; absent without check_recipients.
	NotOnWhatsApp *[]string `json:"not_on_whatsapp,omitempty"`
}

// broadcast starts a broadcast from JSON ({recipients, text, ttl_seconds}) or from a CSV upload
// (Content-Type text/csv: one phone number per line, optional header; text and ttl_seconds
// in the query string).
func (s *server) broadcast(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	max := s.d.Limits.MaxJSONBody
	if mediaType(r) == "text/csv" {
		max = s.d.Limits.MaxCSVBody
	}
	mt, b, err := readBody(w, r, max, "application/json", "text/csv")
	if err != nil {
		return err
	}
	var (
		cmd   commands.StartBroadcast
		check bool
	)
	if mt == "text/csv" {
		q := r.URL.Query()
		secs := int64(0)
		if v := q.Get("ttl_seconds"); v != "" {
			if secs, err = strconv.ParseInt(v, 10, 64); err != nil {
				return invalid("ttl_seconds", "must be an integer")
			}
		}
		ttl, err := ttl(secs)
		if err != nil {
			return err
		}
		recipients, err := decodeRecipientsCSV(b, s.d.Limits.MaxRecipients)
		if err != nil {
			return err
		}
		cmd = commands.StartBroadcast{Recipients: recipients, Text: q.Get("text"), TTL: ttl}
		switch v := q.Get("check_recipients"); v {
		case "", "false":
		case "true":
			check = true
		default:
			return invalid("check_recipients", "must be true or false")
		}
	} else {
		req, ttl, err := decodeBroadcastJSON(b, s.d.Limits.MaxRecipients)
		if err != nil {
			return err
		}
		cmd = commands.StartBroadcast{Recipients: req.Recipients, Text: req.Text, TTL: ttl}
		check = req.CheckRecipients
	}
	cmd.ConnectionID, cmd.IdempotencyKey = id, idempotencyKey(r)
	// Refuse a text the domain would refuse before validating up to 100,000 numbers.
	if err := connection.ValidateText(cmd.Text); err != nil {
		return err
	}
	var notOn *[]string
	if check {
		if cmd.Recipients, notOn, err = s.onlyOnWhatsApp(r, id, cmd.Recipients); err != nil {
			return err
		}
	}
	res, err := s.d.Handlers.StartBroadcast.Handle(r.Context(), cmd)
	if err != nil {
		return err
	}
	setPosition(w, res.Position)
	count := res.Count
	if res.Replayed && count == 0 {
		// The original lies too far back for the command to report its figures.
		if p, err := s.d.Messages.Broadcast(r.Context(), s.d.DB, principal(r).TenantID, res.BroadcastID); err == nil {
			count = int(p.Count)
		}
	}
	markReplay(w, res.Replayed)
	w.Header().Set("Location", "/v1/broadcasts/"+res.BroadcastID.String())
	return writeJSON(w, http.StatusAccepted, broadcastResponse{BroadcastID: res.BroadcastID, ConnectionID: id, Count: count,
		NotOnWhatsApp: notOn})
}

func (s *server) getBroadcast(w http.ResponseWriter, r *http.Request) error {
	id, err := pathUUID(r, "id")
	if err != nil {
		return err
	}
	p, err := s.d.Messages.Broadcast(r.Context(), s.d.DB, principal(r).TenantID, id)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{
		"broadcast_id": p.BroadcastID, "connection_id": p.ConnectionID, "started_at": p.StartedAt, "count": p.Count,
		"queued": p.Queued, "dispatched": p.Dispatched, "sent": p.Sent, "delivered": p.Delivered, "read": p.Read,
		"failed": p.Failed, "purged": p.Purged, "expired": p.Expired, "unknown": p.Unknown, "cancelled": p.Cancelled,
	})
}

// cancelResponse is the body of 200 on DELETE …/messages/{message_id}; a second cancel of the
// same message answers the first cancel's body (Idempotent-Replayed: true).
type cancelResponse struct {
	MessageID    uuid.UUID `json:"message_id"`
	ConnectionID string    `json:"connection_id"`
	Seq          uint64    `json:"seq"`
	Status       string    `json:"status"`
	Reason       string    `json:"reason"`
	CancelledBy  string    `json:"cancelled_by"`
	CancelledAt  time.Time `json:"cancelled_at"`
}

// cancelMessage cancels one queued message ({"reason": "…"}, required). 409
// message_not_pending once it was dispatched, expired or purged; 404 for a message unknown on
// the connection or a connection of another tenant.
func (s *server) cancelMessage(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	msgID, err := pathUUID(r, "message_id")
	if err != nil {
		return err
	}
	_, b, err := readBody(w, r, s.d.Limits.MaxJSONBody, "application/json")
	if err != nil {
		return err
	}
	req, err := decodeCancel(b)
	if err != nil {
		return err
	}
	cmd := commands.CancelMessage{ConnectionID: id, MessageID: msgID, Reason: req.Reason}
	// A broadcast message recorded in a BroadcastQueued chunk has no event of its own: tell the
	// command where the status read model saw it (the command checks the hint). A cancel right
	// after its broadcast sends the broadcast's Waqueue-Position as Waqueue-Min-Position.
	if err := s.awaitMinPosition(w, r, []string{projections.MessageStatusName}); err != nil {
		return err
	}
	if v, err := s.d.Messages.Message(r.Context(), s.d.DB, principal(r).TenantID, msgID); err == nil && v.BroadcastID != uuid.Nil {
		cmd.BroadcastID, cmd.Seq = v.BroadcastID, v.Seq
	}
	res, err := s.d.Handlers.CancelMessage.Handle(r.Context(), cmd)
	if err != nil {
		return err
	}
	setPosition(w, res.Position)
	markReplay(w, res.Replayed)
	c := res.Cancelled
	return writeJSON(w, http.StatusOK, cancelResponse{MessageID: c.MessageID, ConnectionID: id, Seq: c.Seq,
		Status: connection.MessageStatusCancelled.String(), Reason: c.Reason, CancelledBy: c.CancelledBy, CancelledAt: c.CancelledAt})
}

package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/pairing"
	wmtransport "github.com/waqueue/waqueue/adapters/whatsmeow"
	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/projections"
)

func writeJSON(w http.ResponseWriter, status int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
	return nil
}

// cardView is a connection card as the API shows it.
type cardView struct {
	ID          string      `json:"id"`
	TenantID    string      `json:"tenant_id"`
	Phone       string      `json:"phone"`
	OnBan       string      `json:"on_ban"`
	LinkStatus  string      `json:"link_status"`
	QueueStatus string      `json:"queue_status"`
	Pending     uint64      `json:"pending"`
	InFlight    uint64      `json:"in_flight"`
	Ban         *banView    `json:"ban,omitempty"`
	Logout      *logoutView `json:"logout,omitempty"`
	// HeldReason says why the queue is held (banned, session_invalid, operator, after_clear, tenant_suspended),
	// also while clearing and after the ban is lifted; "" when not held.
	HeldReason    string     `json:"held_reason,omitempty"`
	Hold          *holdView  `json:"hold,omitempty"`
	Clear         *clearView `json:"clear,omitempty"`
	LastProblem   string     `json:"last_problem,omitempty"`
	LastProblemAt time.Time  `json:"last_problem_at,omitzero"`
	RegisteredAt  time.Time  `json:"registered_at,omitzero"`
	UpdatedAt     time.Time  `json:"updated_at,omitzero"`
	// SendingPolicy is how the dispatcher paces the connection.
	SendingPolicy sendingPolicyView `json:"sending_policy"`
	// DispatchedToday is the messages dispatched on the connection's local day (in the policy's
	// time zone), held against sending_policy.daily_cap.
	DispatchedToday int `json:"dispatched_today"`
}

// sendingPolicyView is a sending policy as the API shows it (and as PATCH takes it).
type sendingPolicyView struct {
	MinIntervalSeconds int64           `json:"min_interval_seconds"`
	JitterSeconds      int64           `json:"jitter_seconds"`
	DailyCap           int             `json:"daily_cap"`
	TimeZone           string          `json:"time_zone"`
	QuietHours         *quietHoursView `json:"quiet_hours"`
}

type quietHoursView struct {
	Start string `json:"start"`
	End   string `json:"end"`
}

func viewSendingPolicy(p connection.SendingPolicy) sendingPolicyView {
	if p.IsZero() {
		p = connection.DefaultSendingPolicy()
	}
	v := sendingPolicyView{MinIntervalSeconds: int64(p.MinInterval / time.Second), JitterSeconds: int64(p.Jitter / time.Second),
		DailyCap: p.DailyCap, TimeZone: p.TimeZone}
	if q := p.QuietHours; q != nil {
		v.QuietHours = &quietHoursView{Start: q.Start.String(), End: q.End.String()}
	}
	return v
}

type banView struct {
	Kind      string    `json:"kind"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	// Reason is the transport's code ("101"); Cause the stable code, Description in words.
	Reason      string    `json:"reason,omitempty"`
	Cause       string    `json:"cause"`
	Description string    `json:"description"`
	Since       time.Time `json:"since"`
}

// logoutView is why the session was lost, while the link is session_invalid.
type logoutView struct {
	Reason      string `json:"reason,omitempty"`
	Cause       string `json:"cause"`
	Description string `json:"description"`
}

type holdView struct {
	Reason string    `json:"reason"`
	Actor  string    `json:"actor"`
	Note   string    `json:"note,omitempty"`
	Since  time.Time `json:"since"`
}

type clearView struct {
	ClearID     uuid.UUID `json:"clear_id"`
	RequestedBy string    `json:"requested_by"`
	RequestedAt time.Time `json:"requested_at"`
	Scope       string    `json:"scope"`
	// Then is what the queue becomes when the clear completes: keep, hold or resume.
	Then string `json:"then"`
}

// viewCard is the API's view of card c at now (for its count of the day).
func viewCard(c projections.Card, now time.Time) cardView {
	v := cardView{SendingPolicy: viewSendingPolicy(c.SendingPolicy), DispatchedToday: c.SentToday(now),
		ID: c.ConnectionID, TenantID: c.TenantID, Phone: c.Phone, OnBan: c.OnBan,
		LinkStatus: c.LinkStatus.String(), QueueStatus: c.QueueStatus.String(), Pending: c.Pending, InFlight: c.InFlight,
		LastProblem: c.LastProblem, LastProblemAt: c.LastProblemAt, RegisteredAt: c.RegisteredAt, UpdatedAt: c.UpdatedAt,
	}
	if c.Ban != nil {
		v.Ban = &banView{Kind: c.Ban.Kind.String(), ExpiresAt: c.Ban.ExpiresAt, Reason: c.Ban.Reason, Since: c.Ban.Since,
			Cause: c.Ban.Explained.Code, Description: c.Ban.Explained.Description}
	}
	if c.Logout != nil {
		v.Logout = &logoutView{Reason: c.Logout.Reason, Cause: c.Logout.Explained.Code, Description: c.Logout.Explained.Description}
	}
	if c.Hold != nil {
		v.Hold = &holdView{Reason: c.Hold.Reason.String(), Actor: c.Hold.Actor, Note: c.Hold.Note, Since: c.Hold.Since}
		v.HeldReason = v.Hold.Reason
	}
	if c.Clear != nil {
		v.Clear = &clearView{ClearID: c.Clear.ClearID, RequestedBy: c.Clear.RequestedBy, RequestedAt: c.Clear.RequestedAt, Scope: c.Clear.Scope,
			Then: c.Clear.Then.String()}
	}
	return v
}

// pairable refuses another tenant's or an unknown connection (404) and a retired one (409
// connection_retired): a retired connection is never paired again.
func (s *server) pairable(r *http.Request, id string) error {
	c, err := s.card(r, id)
	if err != nil {
		return err
	}
	if c.LinkStatus == connection.LinkStatusRetired {
		return &connection.Error{Op: "pair", ConnectionID: id, Err: connection.ErrConnectionRetired}
	}
	return nil
}

// card returns connection id of the caller's tenant (ErrNotFound for another tenant's).
func (s *server) card(r *http.Request, id string) (projections.Card, error) {
	return s.d.Cards.Card(r.Context(), s.d.DB, principal(r).TenantID, id)
}

func (s *server) createConnection(w http.ResponseWriter, r *http.Request) error {
	_, b, err := readBody(w, r, s.d.Limits.MaxJSONBody, "application/json")
	if err != nil {
		return err
	}
	req, err := decodeCreateConnection(b)
	if err != nil {
		return err
	}
	id := req.ID
	if id == "" {
		id = uuid.NewString()
	}
	cmd := commands.RegisterConnection{ConnectionID: id, Phone: req.Phone}
	if req.SendingPolicy != nil {
		pt, err := req.SendingPolicy.patch()
		if err != nil {
			return err
		}
		cmd.SendingPolicy = &pt
	}
	if req.OnBan != "" {
		if cmd.OnBan, err = connection.ParseOnBanPolicy(req.OnBan); err != nil {
			return err
		}
	}
	res, err := s.d.Handlers.RegisterConnection.Handle(r.Context(), cmd)
	if err != nil {
		return err
	}
	setPosition(w, res.Position)
	s.ownView(w, r.Context(), res.Position, projections.CardsName)
	p := principal(r)
	card, err := s.d.Cards.Card(r.Context(), s.d.DB, p.TenantID, id)
	if err != nil {
		// The read model lags: answer with what the command decided.
		card = projections.Card{TenantID: p.TenantID, ConnectionID: id, Phone: req.Phone, OnBan: cmd.OnBan.String(),
			LinkStatus: connection.LinkStatusUnpaired, QueueStatus: connection.QueueStatusOpen, SendingPolicy: connection.DefaultSendingPolicy()}
		if cmd.SendingPolicy != nil {
			card.SendingPolicy, _ = cmd.SendingPolicy.Apply(card.SendingPolicy)
		}
	}
	w.Header().Set("Location", "/v1/connections/"+id)
	return writeJSON(w, http.StatusCreated, viewCard(card, s.d.Now()))
}

func (s *server) listConnections(w http.ResponseWriter, r *http.Request) error {
	cards, err := s.d.Cards.List(r.Context(), s.d.DB, principal(r).TenantID)
	if err != nil {
		return err
	}
	out := make([]cardView, 0, len(cards))
	for _, c := range cards {
		out = append(out, viewCard(c, s.d.Now()))
	}
	return writeJSON(w, http.StatusOK, map[string]any{"connections": out})
}

// changeConnection changes a connection's settings: its sending policy (partially; recorded as
// SendingPolicyChanged) and its on_ban policy (OnBanPolicyChanged), both audited; a setting set
// to its current value records nothing. The whole body is validated first (a bad setting
// records nothing); then the sending policy is recorded, then on_ban. It answers the card.
func (s *server) changeConnection(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	_, b, err := readBody(w, r, s.d.Limits.MaxJSONBody, "application/json")
	if err != nil {
		return err
	}
	ch, err := decodeChangeConnection(b)
	if err != nil {
		return err
	}
	if ch.sending != nil {
		// The zone's loading too, before anything is recorded.
		if err := commands.CheckTimeZone(*ch.sending); err != nil {
			return err
		}
	}
	var pos eventstore.Position
	if ch.sending != nil {
		res, err := s.d.Handlers.SetSendingPolicy.Handle(r.Context(), commands.SetSendingPolicy{ConnectionID: id, Patch: *ch.sending})
		if err != nil {
			return err
		}
		pos = res.Position
	}
	if !ch.onBan.IsZero() {
		res, err := s.d.Handlers.SetOnBanPolicy.Handle(r.Context(), commands.SetOnBanPolicy{ConnectionID: id, Policy: ch.onBan})
		if err != nil {
			return err
		}
		if !res.Position.IsZero() {
			pos = res.Position
		}
	}
	setPosition(w, pos)
	s.ownView(w, r.Context(), pos, projections.CardsName)
	c, err := s.card(r, id)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, viewCard(c, s.d.Now()))
}

func (s *server) getConnection(w http.ResponseWriter, r *http.Request) error {
	c, err := s.card(r, r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, viewCard(c, s.d.Now()))
}

// negotiate picks the first of offers that the Accept header accepts ("" when none does).
// A missing Accept accepts the first offer.
func negotiate(r *http.Request, offers ...string) string {
	accept := r.Header.Values("Accept")
	if len(accept) == 0 {
		return offers[0]
	}
	var ranges []string
	for _, h := range accept {
		for _, part := range strings.Split(h, ",") {
			mr, _, _ := strings.Cut(part, ";")
			if mr = strings.ToLower(strings.TrimSpace(mr)); mr != "" {
				ranges = append(ranges, mr)
			}
		}
	}
	for _, o := range offers {
		typ, _, _ := strings.Cut(o, "/")
		for _, mr := range ranges {
			if mr == o || mr == "*/*" || mr == typ+"/*" {
				return o
			}
		}
	}
	return ""
}

const qrPNGSize = 320

func (s *server) writeQR(w http.ResponseWriter, r *http.Request, id, code string, running bool) error {
	switch negotiate(r, "application/json", "image/png", "text/plain") {
	case "application/json":
		return writeJSON(w, http.StatusOK, map[string]any{"connection_id": id, "code": code, "running": running})
	case "image/png":
		png, err := wmtransport.QRPNG(code, qrPNGSize)
		if err != nil {
			return err
		}
		w.Header().Set("Content-Type", "image/png")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(png)
		return nil
	case "text/plain":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(code + "\n"))
		return nil
	}
	return &Problem{Status: http.StatusNotAcceptable, Code: CodeNotAcceptable,
		Detail: "the QR code is available as application/json, image/png or text/plain"}
}

// startPairQR joins the QR pairing of the connection running on any node, or starts one on
// this node when none runs, and answers with its latest code. The pairing outlives the request,
// bounded by Limits.PairingTimeout; GET on any node shows the latest code.
func (s *server) startPairQR(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if err := s.pairable(r, id); err != nil {
		return err
	}
	if negotiate(r, "application/json", "image/png", "text/plain") == "" {
		return s.writeQR(w, r, id, "", false)
	}
	q, err := s.d.Pairing.Start(r.Context(), principal(r).TenantID, id)
	if errors.Is(err, pairing.ErrNoCode) {
		return &Problem{Status: http.StatusConflict, Code: CodeNoPairing, Detail: "the pairing ended without a QR code; see the connection's status"}
	}
	if err != nil {
		return err
	}
	return s.writeQR(w, r, id, q.Code, q.Running)
}

// getPairQR answers the latest code of the QR pairing of the connection running on any node
// (from this node's memory when it runs here, else from the shared read-model database).
func (s *server) getPairQR(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if _, err := s.card(r, id); err != nil {
		return err
	}
	q, ok, err := s.d.Pairing.Latest(r.Context(), principal(r).TenantID, id)
	if err != nil {
		return err
	}
	if !ok {
		return &Problem{Status: http.StatusNotFound, Code: CodeNoPairing, Detail: "no QR pairing of this connection runs (or it has no code yet); POST first"}
	}
	return s.writeQR(w, r, id, q.Code, q.Running)
}

func (s *server) pairPhone(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	_, b, err := readBody(w, r, s.d.Limits.MaxJSONBody, "application/json")
	if err != nil {
		return err
	}
	req, err := decodePairPhone(b)
	if err != nil {
		return err
	}
	c, err := s.card(r, id)
	if err != nil {
		return err
	}
	if c.LinkStatus == connection.LinkStatusRetired {
		return &connection.Error{Op: "pair", ConnectionID: id, Err: connection.ErrConnectionRetired}
	}
	phone := req.Phone
	if phone == "" {
		phone = c.Phone
	}
	e164, err := connection.NormalizePhone("phone", phone, "")
	if err != nil {
		return err
	}
	code, err := s.d.Transport.PairPhone(context.WithoutCancel(r.Context()), connKey(r), e164)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"connection_id": id, "phone": e164, "code": code})
}

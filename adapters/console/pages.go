package console

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/projections"
)

func (c *Console) tenant(r *http.Request) string { return userOf(r.Context()).principal.TenantID }

func (c *Console) connectionsPage(w http.ResponseWriter, r *http.Request) error {
	u := userOf(r.Context())
	cards, err := c.d.Cards.List(r.Context(), c.d.DB, u.principal.TenantID)
	if err != nil {
		return err
	}
	views := make([]cardView, 0, len(cards))
	counts := map[string]int{}
	for _, card := range cards {
		v := c.viewCard(r.Context(), card, u.principal)
		views = append(views, v)
		counts[v.Link.Tone]++
	}
	c.render(w, r, http.StatusOK, "connections", map[string]any{"Title": "Connections", "Cards": views, "Live": true,
		"Active": counts["ok"], "Attention": counts["bad"] + counts["warn"]})
	return nil
}

// clearView is one clear as the console shows it: from the clears read model, or (while the
// read model has not caught up with a clear just requested or just done) from its events.
type clearView struct {
	ClearID       uuid.UUID
	Done          bool
	Scope         string
	RequestedBy   string
	Reason        string
	RequestedAt   time.Time
	Then          connection.ClearThen
	PurgedCount   uint64
	Purged        []connection.SeqRange
	InFlightCount uint64
	InFlight      []connection.InFlightMessage
	NotSentCount  uint64
	NotSent       []connection.InFlightMessage
	CompletedAt   time.Time
	QueueAfter    connection.QueueStatus
	URL           string
}

func (c *Console) viewClear(ctx context.Context, tenant string, r projections.ClearReport) clearView {
	return clearView{ClearID: r.ClearID, Done: r.Status == projections.ClearStatusCompleted, Scope: scopeWords(r.Scope),
		RequestedBy: c.actor(ctx, tenant, r.RequestedBy), Reason: r.Reason, RequestedAt: r.RequestedAt, Then: r.Then,
		PurgedCount: r.PurgedCount, Purged: r.Purged, InFlightCount: r.InFlightCount, InFlight: r.InFlight,
		NotSentCount: r.NotSentCount, NotSent: r.NotSent, CompletedAt: r.CompletedAt, QueueAfter: r.QueueAfter,
		URL: "/console/connections/" + r.ConnectionID + "/clears/" + r.ClearID.String()}
}

// clearsScan bounds how many of a connection's latest events the console reads to find a clear
// the clears read model does not show yet.
const clearsScan = 200_000

// clearFromStream finds clear clearID in the connection's stream, reading backwards: its report
// (QueueCleared) if recorded, else its request. ErrNotFound when neither is there.
func (c *Console) clearFromStream(ctx context.Context, tenant, connID string, clearID uuid.UUID) (clearView, error) {
	from := eventstore.End
	const page = 1000
	for scanned := 0; scanned < clearsScan; {
		evs, err := c.d.Store.ReadStream(ctx, connection.StreamName(connection.Key(tenant, connID)), eventstore.Backwards, from, page)
		if errors.Is(err, eventstore.ErrStreamNotFound) {
			return clearView{}, projections.ErrNotFound
		}
		if err != nil {
			return clearView{}, err
		}
		for _, e := range evs {
			switch e.Type {
			case connection.TypeQueueCleared:
				var qc connection.QueueCleared
				if err := json.Unmarshal(e.Data, &qc); err != nil {
					return clearView{}, err
				}
				if qc.ClearID == clearID {
					return clearView{ClearID: clearID, Done: true, Scope: scopeWords(qc.Scope), RequestedBy: c.actor(ctx, tenant, qc.RequestedBy),
						Reason: qc.Reason, RequestedAt: qc.RequestedAt, Then: qc.Then, PurgedCount: qc.PurgedCount, Purged: qc.Purged,
						InFlightCount: uint64(qc.InFlightCount), InFlight: qc.InFlight, NotSentCount: uint64(qc.NotSentCount),
						NotSent: qc.NotSent, CompletedAt: qc.CompletedAt, QueueAfter: qc.QueueAfter}, nil
				}
			case connection.TypeClearQueueRequested:
				var rq connection.ClearQueueRequested
				if err := json.Unmarshal(e.Data, &rq); err != nil {
					return clearView{}, err
				}
				if rq.ClearID == clearID {
					return clearView{ClearID: clearID, Scope: scopeWords(rq.Scope), RequestedBy: c.actor(ctx, tenant, rq.RequestedBy),
						Reason: rq.Reason, RequestedAt: rq.RequestedAt, Then: rq.Then, PurgedCount: rq.PurgeCount, Purged: rq.Purge,
						InFlightCount: uint64(len(rq.InFlight)), InFlight: rq.InFlight, NotSentCount: uint64(len(rq.NotSent)), NotSent: rq.NotSent}, nil
				}
			}
		}
		scanned += len(evs)
		if len(evs) < page || evs[len(evs)-1].Revision == 0 {
			break
		}
		from = evs[len(evs)-1].Revision - 1
	}
	return clearView{}, projections.ErrNotFound
}

func (c *Console) connectionPage(w http.ResponseWriter, r *http.Request) error {
	u := userOf(r.Context())
	id := r.PathValue("id")
	card, err := c.d.Cards.Card(r.Context(), c.d.DB, u.principal.TenantID, id)
	if err != nil {
		return err
	}
	q, err := c.d.Queue.Summary(r.Context(), c.d.DB, u.principal.TenantID, id)
	if err != nil {
		return err
	}
	page, err := c.d.Clears.ClearReports(r.Context(), c.d.DB, u.principal.TenantID, id, "", 10)
	if err != nil {
		return err
	}
	clears := make([]clearView, 0, len(page.Clears))
	for _, cr := range page.Clears {
		clears = append(clears, c.viewClear(r.Context(), u.principal.TenantID, cr))
	}
	type broadcastRow struct {
		ID                           string
		Total, Pending, Sent, Failed uint64
		Known                        bool
	}
	var bcs []broadcastRow
	for _, b := range q.Broadcasts {
		row := broadcastRow{ID: b.BroadcastID.String(), Total: b.Total, Pending: b.Pending}
		if c.d.Messages != nil {
			if p, err := c.d.Messages.Broadcast(r.Context(), c.d.DB, u.principal.TenantID, b.BroadcastID); err == nil {
				row.Sent, row.Failed, row.Known = p.Sent+p.Delivered+p.Read, p.Failed, true
			}
		}
		bcs = append(bcs, row)
	}
	data := map[string]any{"Title": id, "Card": c.viewCard(r.Context(), card, u.principal), "Queue": q, "Clears": clears, "Live": true,
		"Broadcasts": bcs}
	switch r.URL.Query().Get("fragment") { // the page's script refreshes these on live events
	case "queue":
		return c.renderFragment(w, r, "connection", "queue", data)
	case "sending":
		return c.renderFragment(w, r, "connection", "sending", data)
	}
	data["Flash"] = c.popFlash(r)
	c.render(w, r, http.StatusOK, "connection", data)
	return nil
}

// clearForm is what the clear confirmation shows and echoes back after a refusal.
type clearForm struct {
	Card       cardView
	Queue      projections.QueueSummary
	Key        string
	Reason     string
	Scope      string
	Then       string
	Error      string
	ErrorField string
	AfterHeld  bool
	Banned     bool
}

func (c *Console) clearData(r *http.Request, id string, f clearForm) (map[string]any, error) {
	u := userOf(r.Context())
	card, err := c.d.Cards.Card(r.Context(), c.d.DB, u.principal.TenantID, id)
	if err != nil {
		return nil, err
	}
	q, err := c.d.Queue.Summary(r.Context(), c.d.DB, u.principal.TenantID, id)
	if err != nil {
		return nil, err
	}
	f.Card, f.Queue = c.viewCard(r.Context(), card, u.principal), q
	f.AfterHeld = card.Hold != nil
	f.Banned = card.LinkStatus != connection.LinkStatusActive
	if f.Then == "" {
		f.Then = connection.ClearThenKeep.String()
	}
	if f.Key == "" {
		f.Key = "console-" + randomToken()[:22]
	}
	if f.Scope == "" {
		f.Scope = "queue"
		if b := r.URL.Query().Get("broadcast"); b != "" {
			f.Scope = b
		}
	}
	return map[string]any{"Title": "Clear the queue of " + id, "Form": f, "Fragment": r.URL.Query().Get("fragment") == "1"}, nil
}

func (c *Console) clearPage(w http.ResponseWriter, r *http.Request) error {
	data, err := c.clearData(r, r.PathValue("id"), clearForm{})
	if err != nil {
		return err
	}
	if data["Fragment"] == true {
		return c.renderFragment(w, r, "clear", "clearform", data)
	}
	c.render(w, r, http.StatusOK, "clear", data)
	return nil
}

// digits keeps the digits of a phone number, so that "+49 170 1234567" confirms "+491701234567"
// (as the API compares them).
func digits(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r >= '0' && r <= '9' {
			b.WriteRune(r)
		}
	}
	return b.String()
}

func (c *Console) clear(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	f := clearForm{Key: r.PostFormValue("idempotency_key"), Reason: strings.TrimSpace(r.PostFormValue("reason")),
		Scope: r.PostFormValue("scope"), Then: r.PostFormValue("then")}
	card, err := c.d.Cards.Card(r.Context(), c.d.DB, c.tenant(r), id)
	if err != nil {
		return err
	}
	again := func(msg, field string) error {
		f.Error, f.ErrorField = msg, field
		data, err := c.clearData(r, id, f)
		if err != nil {
			return err
		}
		c.render(w, r, http.StatusUnprocessableEntity, "clear", data)
		return nil
	}
	if d := digits(r.PostFormValue("confirm")); d == "" || d != digits(card.Phone) {
		return again("The number you typed does not match this connection's phone number.", "confirm")
	}
	if f.Reason == "" {
		return again("Say why you clear the queue; the reason goes into the audit trail.", "reason")
	}
	if len(f.Key) < 8 || len(f.Key) > 100 {
		f.Key = ""
		return again("The form expired; check the details and confirm again.", "")
	}
	cmd := commands.RequestClear{ConnectionID: id, IdempotencyKey: f.Key, Reason: f.Reason}
	if cmd.Then, err = connection.ParseClearThen(f.Then); err != nil {
		f.Then = ""
		return again("Choose what happens to the queue after the clear.", "then")
	}
	if f.Scope != "" && f.Scope != "queue" {
		b, err := uuid.Parse(f.Scope)
		if err != nil {
			return again("Choose the whole queue or one of the listed broadcasts.", "scope")
		}
		cmd.BroadcastID = b
	}
	res, err := c.d.Handlers.RequestClear.Handle(r.Context(), cmd)
	if err != nil {
		if errors.Is(err, connection.ErrIdempotencyKeyReused) {
			// This form (its key) already made a different clear: a fresh form, a fresh key.
			f.Key = ""
			return again("This form was already used for another clear. Check the details and confirm again.", "")
		}
		if msg := refusal(err); msg != "" {
			if errors.Is(err, connection.ErrLinkStatus) {
				f.Then = "" // resume was refused: the form offers keep again
			}
			return again(msg, "")
		}
		return err
	}
	c.settle(r.Context(), res.Position)
	http.Redirect(w, r, "/console/connections/"+id+"/clears/"+res.ClearID.String(), http.StatusSeeOther)
	return nil
}

func (c *Console) clearReportPage(w http.ResponseWriter, r *http.Request) error {
	u := userOf(r.Context())
	tenant := u.principal.TenantID
	id := r.PathValue("id")
	card, err := c.d.Cards.Card(r.Context(), c.d.DB, tenant, id)
	if err != nil {
		return err
	}
	clearID, err := uuid.Parse(r.PathValue("clear_id"))
	if err != nil {
		return projections.ErrNotFound
	}
	var v clearView
	rep, err := c.d.Clears.ClearReport(r.Context(), c.d.DB, tenant, id, clearID)
	switch {
	case err == nil && rep.Status == projections.ClearStatusCompleted:
		v = c.viewClear(r.Context(), tenant, rep)
	case err == nil || errors.Is(err, projections.ErrNotFound):
		// Requested, or not in the read model yet: the stream has it exactly (its report may
		// be recorded already).
		if v, err = c.clearFromStream(r.Context(), tenant, id, clearID); err != nil {
			return err
		}
	default:
		return err
	}
	data := map[string]any{"Title": "Clear of " + id, "Card": c.viewCard(r.Context(), card, u.principal), "ClearID": clearID.String(),
		"Live": true, "Clear": v}
	if v.Done {
		data["Duration"] = v.CompletedAt.Sub(v.RequestedAt).Round(time.Millisecond).String()
	}
	c.render(w, r, http.StatusOK, "report", data)
	return nil
}

// thenWords says what a clear leaves the queue as.
func thenWords(t connection.ClearThen) string {
	switch t {
	case connection.ClearThenHold:
		return "held afterwards"
	case connection.ClearThenResume:
		return "resumed afterwards"
	}
	return "kept as it was"
}

func scopeWords(s connection.ClearScope) string {
	if !s.IsWholeQueue() {
		return "only broadcast " + s.BroadcastID.String()[:8]
	}
	return "the whole queue"
}

func (c *Console) hold(w http.ResponseWriter, r *http.Request) error {
	return c.holdOrResume(w, r, true)
}

func (c *Console) resume(w http.ResponseWriter, r *http.Request) error {
	return c.holdOrResume(w, r, false)
}

func (c *Console) holdOrResume(w http.ResponseWriter, r *http.Request, hold bool) error {
	id := r.PathValue("id")
	note := strings.TrimSpace(r.PostFormValue("note"))
	var res commands.Result
	var err error
	if hold {
		res, err = c.d.Handlers.HoldQueue.Handle(r.Context(), commands.HoldQueue{ConnectionID: id, Note: note})
	} else {
		res, err = c.d.Handlers.ResumeQueue.Handle(r.Context(), commands.ResumeQueue{ConnectionID: id, Note: note})
	}
	if err != nil {
		if msg := refusal(err); msg != "" {
			c.setFlash(r, flash{Tone: "bad", Text: msg})
			http.Redirect(w, r, "/console/connections/"+id, http.StatusSeeOther)
			return nil
		}
		return err
	}
	c.settle(r.Context(), res.Position)
	done := "Queue resumed: sending continues."
	if hold {
		done = "Queue held: nothing is sent until someone resumes it."
	}
	c.setFlash(r, flash{Tone: "ok", Text: done})
	http.Redirect(w, r, "/console/connections/"+id, http.StatusSeeOther)
	return nil
}

package console

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/projections"
)

// badge is a status in colour and words.
type badge struct {
	Tone string // ok, warn, bad, info, neutral
	Text string
}

// cardView is a connection card as the console shows it.
type cardView struct {
	ID, Phone  string
	Link       badge
	LinkDetail string
	BanExpires time.Time
	// BanWords is the ban's reason in words (with BanExpires: the badge is "Banned until
	// <time> — <BanWords>", the time shown in the browser's zone by the script).
	BanWords    string
	Queue       badge
	QueueDetail string
	Pending     uint64
	InFlight    uint64
	Problem     string
	ProblemAt   time.Time
	Clearing    bool
	ClearURL    string
	CanEdit     bool
	NeedsPair   bool
	// Policy is the sending policy in words ("One message every 3–5 s · quiet 22:00–07:00
	// Europe/Berlin"); Today and Cap are the messages dispatched on the connection's local day
	// and its daily cap; Capped is set when the cap is reached (messages wait for tomorrow).
	Policy     string
	Today, Cap int
	Capped     bool
}

// policyWords says a sending policy in a line.
func policyWords(p connection.SendingPolicy) string {
	if p.IsZero() {
		p = connection.DefaultSendingPolicy()
	}
	lo, hi := int(p.MinInterval/time.Second), int((p.MinInterval+p.Jitter)/time.Second)
	s := "One message every " + strconv.Itoa(lo) + " s"
	if hi > lo {
		s = "One message every " + strconv.Itoa(lo) + "–" + strconv.Itoa(hi) + " s"
	}
	if q := p.QuietHours; q != nil {
		s += " · quiet " + q.String()
	}
	if q := p.QuietHours; q != nil || p.TimeZone != connection.DefaultTimeZone {
		s += " (" + p.TimeZone + ")"
	}
	return s
}

// banReasons are WhatsApp's temporary-ban codes (whatsmeow events.TempBanReason) in plain words.
var banReasons = map[string]string{
	"101": "sending too many messages",
	"102": "too many people blocked this number",
	"103": "creating too many groups",
	"104": "sending the same message to too many people",
	"106": "too many broadcast-list messages",
}

func banReason(code string) string {
	if s, ok := banReasons[code]; ok {
		return s
	}
	if code == "" || code == "0" {
		return "no reason given"
	}
	return "WhatsApp reason " + code
}

func clock(t time.Time) string { return t.UTC().Format("15:04") + " UTC" }

func stamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2 Jan 2006, 15:04:05") + " UTC"
}

// problemWords turns a card's last problem ("kind: detail") into a sentence.
func problemWords(p string) string {
	kind, detail, _ := strings.Cut(p, ": ")
	detail = strings.ReplaceAll(detail, "_", " ")
	with := func(s string) string {
		if detail == "" {
			return s
		}
		return s + ": " + detail
	}
	switch kind {
	case "session_invalidated":
		return "Logged out (WhatsApp code " + detail + ")"
	case "message_failed":
		return with("A message failed")
	case "outcome_unknown":
		return with("A message's outcome is unknown")
	case "stream_replaced":
		return with("Another device took over the session")
	case "client_outdated":
		return with("WhatsApp says the client is outdated")
	case "keepalive_timeout":
		return with("The connection to WhatsApp stopped answering")
	case "connect_failure":
		return with("Could not connect to WhatsApp")
	}
	return strings.ReplaceAll(p, "_", " ")
}

func (c *Console) viewCard(ctx context.Context, card projections.Card, p auth.Principal) cardView {
	now := time.Now
	if c.d.Now != nil {
		now = c.d.Now
	}
	v := cardView{ID: card.ConnectionID, Phone: card.Phone, Pending: card.Pending, InFlight: card.InFlight,
		CanEdit: p.Can(auth.ConnectionEdit), Policy: policyWords(card.SendingPolicy), Today: card.SentToday(now()), Cap: card.SendingPolicy.DailyCap}
	if v.Cap == 0 {
		v.Cap = connection.DefaultDailyCap
	}
	v.Capped = v.Today >= v.Cap
	switch card.LinkStatus {
	case connection.LinkStatusActive:
		v.Link = badge{"ok", "Active"}
	case connection.LinkStatusUnpaired:
		v.Link = badge{"warn", "Scan the QR code to connect"}
		v.NeedsPair = true
	case connection.LinkStatusSessionInvalid:
		v.Link = badge{"bad", "Logged out on the phone"}
		if card.Logout != nil && card.Logout.Explained.Code == connection.ReasonUnpaired {
			v.Link.Text = "Logged out by an operator"
		}
		v.LinkDetail = "Pair the number again to reconnect."
		v.NeedsPair = true
	case connection.LinkStatusRetired:
		v.Link = badge{"neutral", "Retired"}
		v.LinkDetail = "This connection was retired: it sends nothing again. Its history and audit stay readable."
		v.CanEdit = false
	case connection.LinkStatusBanned:
		v.Link = badge{"bad", "Banned"}
		if b := card.Ban; b != nil {
			if b.Kind == connection.BanPermanent || b.ExpiresAt.IsZero() {
				v.Link.Text = "Banned permanently"
				v.LinkDetail = "WhatsApp banned this number for good; it cannot send again."
			} else {
				v.Link.Text = "Banned until " + clock(b.ExpiresAt) + " — " + banReason(b.Reason)
				v.BanExpires, v.BanWords = b.ExpiresAt, banReason(b.Reason)
			}
		}
	default:
		v.Link = badge{"neutral", card.LinkStatus.String()}
	}
	switch card.QueueStatus {
	case connection.QueueStatusOpen:
		v.Queue = badge{"ok", "Queue open"}
	case connection.QueueStatusHeld:
		v.Queue = badge{"warn", "Queue held"}
		if h := card.Hold; h != nil {
			switch h.Reason {
			case connection.HoldOnBan:
				v.QueueDetail = "Held because the number was banned. Nothing is sent until someone resumes or clears the queue."
			case connection.HoldOnSessionInvalid:
				v.QueueDetail = "Held because the phone logged out. Nothing is sent until someone resumes or clears the queue."
			case connection.HoldOnTenantSuspended:
				v.QueueDetail = "Held because the platform operator suspended this tenant. It reopens when the tenant is resumed; nothing was purged."
			default:
				v.QueueDetail = "Held by " + c.actor(ctx, card.TenantID, h.Actor) + " since " + stamp(h.Since) + "."
				if h.Note != "" {
					v.QueueDetail += " Note: " + h.Note
				}
			}
		}
	case connection.QueueStatusClearing:
		v.Queue = badge{"info", "Clearing"}
		v.Clearing = true
		if cl := card.Clear; cl != nil {
			v.QueueDetail = "Clear requested by " + c.actor(ctx, card.TenantID, cl.RequestedBy) + " at " + stamp(cl.RequestedAt) +
				". Nothing is sent meanwhile; the queue is " + thenWords(cl.Then) + "."
			v.ClearURL = "/console/connections/" + card.ConnectionID + "/clears/" + cl.ClearID.String()
		}
	}
	if card.LastProblem != "" {
		v.Problem, v.ProblemAt = problemWords(card.LastProblem), card.LastProblemAt
	}
	return v
}

var funcs = template.FuncMap{
	"hasPrefix": strings.HasPrefix,
	"clock":     clock,
	"thenWords": thenWords,
	"stamp":     stamp,
	"iso": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format(time.RFC3339)
	},
	"num": func(n any) string {
		s := fmt.Sprint(n)
		if len(s) <= 3 {
			return s
		}
		var b strings.Builder
		pre := len(s) % 3
		b.WriteString(s[:pre])
		for i := pre; i < len(s); i += 3 {
			if b.Len() > 0 {
				b.WriteByte(',')
			}
			b.WriteString(s[i : i+3])
		}
		return b.String()
	},
	"short": func(s string) string {
		if len(s) > 8 {
			return s[:8]
		}
		return s
	},
	"can": func(u *user, right string) bool {
		if u == nil {
			return false
		}
		r, err := auth.ParseRight(right)
		return err == nil && u.principal.Can(r)
	},
	"pct": func(part, total uint64) string {
		if total == 0 {
			return "0"
		}
		return strconv.FormatFloat(float64(part)*100/float64(total), 'f', 1, 64)
	},
}

var pageNames = []string{"signin", "error", "connections", "connection", "clear", "report", "pairing", "audit", "analytics"}

func (c *Console) parseTemplates() error {
	c.pages = map[string]*template.Template{}
	for _, name := range pageNames {
		t, err := template.New(name).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/card.html", "templates/"+name+".html")
		if err != nil {
			return fmt.Errorf("console: template %s: %w", name, err)
		}
		c.pages[name] = t
	}
	t, err := template.New("card").Funcs(funcs).ParseFS(templateFS, "templates/card.html")
	if err != nil {
		return fmt.Errorf("console: template card: %w", err)
	}
	c.cardTpl = t
	return nil
}

// render writes page name with data (a map; User and Nav are added).
func (c *Console) render(w http.ResponseWriter, r *http.Request, status int, name string, data map[string]any) {
	if data == nil {
		data = map[string]any{}
	}
	u := userOf(r.Context())
	data["User"] = u
	if u != nil {
		data["CSRF"] = u.csrf
	}
	data["Path"] = r.URL.Path
	var buf bytes.Buffer
	if err := c.pages[name].ExecuteTemplate(&buf, "layout", data); err != nil {
		c.log.ErrorContext(r.Context(), "console: render", "page", name, "error", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// renderFragment writes template block of page name alone (for the script to insert).
func (c *Console) renderFragment(w http.ResponseWriter, r *http.Request, name, block string, data map[string]any) error {
	u := userOf(r.Context())
	data["User"] = u
	if u != nil {
		data["CSRF"] = u.csrf
	}
	var buf bytes.Buffer
	if err := c.pages[name].ExecuteTemplate(&buf, block, data); err != nil {
		return err
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = w.Write(buf.Bytes())
	return nil
}

func (c *Console) renderCard(v cardView) (string, error) {
	var buf bytes.Buffer
	err := c.cardTpl.ExecuteTemplate(&buf, "card", v)
	return buf.String(), err
}

func (c *Console) errorPage(w http.ResponseWriter, r *http.Request, status int, title, detail string) {
	c.render(w, r, status, "error", map[string]any{"Title": title, "Detail": detail, "Status": status})
}

// fail answers an error of a lower layer as a page, mapped with errors.Is/As.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, err error) {
	var denied *auth.DeniedError
	switch {
	case errors.Is(err, projections.ErrNotFound), errors.Is(err, commands.ErrNotFound), errors.Is(err, auth.ErrWrongTenant),
		errors.Is(err, connection.ErrNotRegistered):
		c.errorPage(w, r, http.StatusNotFound, "Not found", "There is no such connection or record in your organisation.")
	case errors.As(err, &denied), errors.Is(err, auth.ErrForbidden):
		c.errorPage(w, r, http.StatusForbidden, "Not allowed", "Your role does not allow this.")
	case errors.Is(err, commands.ErrUnauthenticated):
		c.errorPage(w, r, http.StatusUnauthorized, "Signed out", "Your session has ended. Sign in again.")
	default:
		c.log.ErrorContext(r.Context(), "console request failed", "path", r.URL.Path, "error", err)
		c.errorPage(w, r, http.StatusInternalServerError, "Something went wrong", "The request failed on the server; it is in the server log. Try again in a moment.")
	}
}

// refusal explains a refused command in words an operator can act on ("" if err is not a
// refusal of the domain).
func refusal(err error) string {
	var ls *connection.LinkStatusError
	var ce *connection.ClearingError
	var bn *connection.BroadcastNotPendingError
	switch {
	case errors.As(err, &ls):
		switch ls.Status {
		case connection.LinkStatusBanned:
			return "The queue cannot resume while the number is banned: sending now would risk a longer ban. Wait for the ban to end, or clear the queue."
		case connection.LinkStatusSessionInvalid, connection.LinkStatusUnpaired:
			return "The queue cannot resume while the number is not connected. Pair the number first."
		}
		return "Not possible while the link is " + ls.Status.String() + "."
	case errors.As(err, &ce):
		return "A clear is in progress (requested " + stamp(ce.Since) + "). Wait for its report."
	case errors.As(err, &bn):
		return "That broadcast has nothing pending any more."
	case errors.Is(err, connection.ErrConnectionRetired):
		return "This connection is retired: it accepts no changes."
	case errors.Is(err, connection.ErrAlreadyHeld):
		return "The queue is held already."
	case errors.Is(err, connection.ErrNotHeld):
		return "The queue is not held."
	}
	var ve *connection.ValidationError
	if errors.As(err, &ve) {
		return ve.Error()
	}
	return ""
}

package console

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"sync"
	"time"

	qrcode "github.com/skip2/go-qrcode"

	"github.com/waqueue/waqueue/adapters/transport"
	"github.com/waqueue/waqueue/domain/connection"
)

// qrPairing follows one QR pairing the console started: the latest code, until it ends.
type qrPairing struct {
	mu      sync.Mutex
	code    string
	running bool
	err     error
	first   chan struct{} // closed at the first code or when the pairing ends
}

func (q *qrPairing) snapshot() (string, bool, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.code, q.running, q.err
}

// pairingTimeout bounds a QR pairing the console starts.
const pairingTimeout = 3 * time.Minute

// qrFor returns the running QR pairing of the connection with key connKey (connection.Key: the
// transport's name for it, unique across tenants), starting one when none runs, once it has its
// first code (or has ended, or after 10 s). The transport rotates the code; the pairing page
// shows the latest.
func (c *Console) qrFor(ctx context.Context, connKey string) *qrPairing {
	c.pairMu.Lock()
	if c.pairing == nil {
		c.pairing = map[string]*qrPairing{}
	}
	q, ok := c.pairing[connKey]
	if ok {
		if _, running, _ := q.snapshot(); !running {
			ok = false
		}
	}
	if !ok {
		q = &qrPairing{running: true, first: make(chan struct{})}
		c.pairing[connKey] = q
	}
	c.pairMu.Unlock()
	if !ok { // this request starts it, outside the lock (the transport may take a while)
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), pairingTimeout)
		codes, err := c.d.Transport.PairQR(pctx, connKey)
		if err != nil {
			cancel()
			q.mu.Lock()
			q.running, q.err = false, err
			q.mu.Unlock()
			close(q.first)
			return q
		}
		go func() {
			defer cancel()
			var once sync.Once
			for code := range codes {
				q.mu.Lock()
				q.code = code
				q.mu.Unlock()
				once.Do(func() { close(q.first) })
			}
			q.mu.Lock()
			q.running = false
			q.mu.Unlock()
			once.Do(func() { close(q.first) })
		}()
	}
	select { // the first code normally comes at once
	case <-q.first:
	case <-time.After(10 * time.Second):
	case <-ctx.Done():
	}
	return q
}

// qrSVG renders a QR code as an SVG image: one path of dark modules, with a quiet zone.
func qrSVG(code string) (template.HTML, error) {
	q, err := qrcode.New(code, qrcode.Medium)
	if err != nil {
		return "", fmt.Errorf("console: QR code: %w", err)
	}
	q.DisableBorder = false
	bm := q.Bitmap()
	n := len(bm)
	var p strings.Builder
	for y, row := range bm {
		for x, dark := range row {
			if dark {
				fmt.Fprintf(&p, "M%d %dh1v1h-1z", x, y)
			}
		}
	}
	return template.HTML(fmt.Sprintf(`<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" width="264" height="264" role="img" `+
		`aria-label="QR code to scan with WhatsApp" shape-rendering="crispEdges"><rect width="%d" height="%d" fill="#fff"/>`+
		`<path d="%s" fill="#111"/></svg>`, n, n, n, n, p.String())), nil
}

func (c *Console) pairingPage(w http.ResponseWriter, r *http.Request) error {
	u := userOf(r.Context())
	id := r.PathValue("id")
	card, err := c.d.Cards.Card(r.Context(), c.d.DB, u.principal.TenantID, id)
	if err != nil {
		return err
	}
	data := map[string]any{"Title": "Pair " + id, "Card": c.viewCard(r.Context(), card, u.principal), "Live": true,
		"Fragment": r.URL.Query().Get("fragment") == "1", "Flash": c.popFlash(r)}
	switch {
	case c.d.Transport == nil:
		data["Unavailable"] = "This node has no WhatsApp transport."
	case card.LinkStatus == connection.LinkStatusActive || card.LinkStatus == connection.LinkStatusBanned:
		data["Paired"] = true
	case card.LinkStatus == connection.LinkStatusRetired:
		data["Unavailable"] = "This connection is retired: it cannot be paired again."
	default:
		q := c.qrFor(r.Context(), connection.Key(u.principal.TenantID, id))
		code, running, perr := q.snapshot()
		switch {
		case errors.Is(perr, transport.ErrAlreadyPaired):
			data["Paired"] = true
		case perr != nil:
			data["Unavailable"] = "Pairing could not start: " + perr.Error()
		case code == "":
			data["Unavailable"] = "WhatsApp sent no QR code yet. Reload the page in a moment."
		default:
			svg, err := qrSVG(code)
			if err != nil {
				return err
			}
			data["QR"], data["Running"] = svg, running
		}
	}
	if data["Fragment"] == true {
		return c.renderFragment(w, r, "pairing", "qr", data)
	}
	c.render(w, r, http.StatusOK, "pairing", data)
	return nil
}

func (c *Console) pairPhone(w http.ResponseWriter, r *http.Request) error {
	u := userOf(r.Context())
	id := r.PathValue("id")
	card, err := c.d.Cards.Card(r.Context(), c.d.DB, u.principal.TenantID, id)
	if err != nil {
		return err
	}
	if c.d.Transport == nil {
		return errors.New("console: no transport")
	}
	phone := strings.TrimSpace(r.PostFormValue("phone"))
	if phone == "" {
		phone = card.Phone
	}
	e164, err := connection.NormalizePhone("phone", phone, "")
	if err != nil {
		c.setFlash(r, flash{Tone: "bad", Text: "That is not a phone number in international format (+49…)."})
		http.Redirect(w, r, "/console/connections/"+id+"/pairing", http.StatusSeeOther)
		return nil
	}
	code, err := c.d.Transport.PairPhone(context.WithoutCancel(r.Context()), connection.Key(u.principal.TenantID, id), e164)
	if err != nil {
		msg := "Pairing by phone could not start: " + err.Error()
		if errors.Is(err, transport.ErrAlreadyPaired) {
			msg = "This connection is paired already."
		}
		c.setFlash(r, flash{Tone: "bad", Text: msg})
		http.Redirect(w, r, "/console/connections/"+id+"/pairing", http.StatusSeeOther)
		return nil
	}
	c.setFlash(r, flash{Tone: "ok", Text: "On the phone " + e164 + ": WhatsApp → Linked devices → Link with phone number, then enter the code " + code + "."})
	http.Redirect(w, r, "/console/connections/"+id+"/pairing", http.StatusSeeOther)
	return nil
}

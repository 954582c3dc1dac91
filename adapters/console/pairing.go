package console

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"time"

	qrcode "github.com/skip2/go-qrcode"

	"github.com/waqueue/waqueue/adapters/pairing"
	"github.com/waqueue/waqueue/adapters/transport"
	"github.com/waqueue/waqueue/domain/connection"
)

// pairingTimeout bounds a QR pairing the console starts (when Deps.Pairing is nil).
const pairingTimeout = 3 * time.Minute

// firstCodeWait bounds how long the pairing page waits for a new pairing's first code.
const firstCodeWait = 10 * time.Second

// qrFor returns the latest code of the connection's QR pairing running on any node, joining it,
// or starting one on this node when none runs (Pairing.Start); it waits for the first code up to
// firstCodeWait. The transport rotates the code; the pairing page shows the latest.
func (c *Console) qrFor(ctx context.Context, tenantID, connID string) (pairing.QR, error) {
	ctx, cancel := context.WithTimeout(ctx, firstCodeWait)
	defer cancel()
	q, err := c.d.Pairing.Start(ctx, tenantID, connID)
	if errors.Is(err, context.DeadlineExceeded) {
		err = pairing.ErrNoCode
	}
	return q, err
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
		q, perr := c.qrFor(r.Context(), u.principal.TenantID, id)
		code, running := q.Code, q.Running
		switch {
		case errors.Is(perr, transport.ErrAlreadyPaired):
			data["Paired"] = true
		case perr != nil && !errors.Is(perr, pairing.ErrNoCode):
			data["Unavailable"] = "Pairing could not start: " + perr.Error()
		case errors.Is(perr, pairing.ErrNoCode):
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

package console

import (
	"encoding/csv"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/waqueue/waqueue/projections"
)

// auditTypes are the event types offered by the audit page's type filter.
var auditTypes = []string{"ConnectionRegistered", "SessionPaired", "SessionInvalidated", "ConnectionBanned", "BanLifted",
	"QueueHeld", "QueueResumed", "ClearQueueRequested", "QueueCleared", "OnBanPolicyChanged", "SendingPolicyChanged",
	"APIKeyCreated", "APIKeyRoleChanged", "APIKeyRevoked"}

// words splits a CamelCase event type into words: "ClearQueueRequested" → "Clear queue requested".
func words(t string) string {
	var b strings.Builder
	if rest, ok := strings.CutPrefix(t, "APIKey"); ok {
		b.WriteString("API key")
		t = rest
	}
	for i, r := range t {
		if r >= 'A' && r <= 'Z' && (i > 0 || b.Len() > 0) {
			b.WriteByte(' ')
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}

// dayParam parses an optional YYYY-MM-DD query parameter (zero when absent or malformed; the
// form echoes it back).
func dayParam(r *http.Request, name string) (time.Time, string) {
	v := r.URL.Query().Get(name)
	t, err := time.Parse(time.DateOnly, v)
	if err != nil {
		return time.Time{}, ""
	}
	return t, v
}

func (c *Console) auditFilter(r *http.Request) (projections.AuditFilter, map[string]string) {
	q := r.URL.Query()
	f := projections.AuditFilter{ConnectionID: strings.TrimSpace(q.Get("connection")), EventType: q.Get("type"),
		Actor: strings.TrimSpace(q.Get("actor")), Cursor: q.Get("cursor"), Limit: 50}
	from, fromS := dayParam(r, "from")
	to, toS := dayParam(r, "to")
	f.From = from
	if !to.IsZero() {
		f.To = to.AddDate(0, 0, 1) // the "to" day is included
	}
	return f, map[string]string{"connection": f.ConnectionID, "type": f.EventType, "actor": f.Actor, "from": fromS, "to": toS}
}

func filterQuery(vals map[string]string, extra ...string) string {
	q := url.Values{}
	for k, v := range vals {
		if v != "" {
			q.Set(k, v)
		}
	}
	for i := 0; i+1 < len(extra); i += 2 {
		q.Set(extra[i], extra[i+1])
	}
	return q.Encode()
}

type auditRow struct {
	Seq                                uint64
	At, Event, Type, Connection, Actor string
	Reason, Hash, ActorID              string
}

func (c *Console) auditPage(w http.ResponseWriter, r *http.Request) error {
	u := userOf(r.Context())
	f, vals := c.auditFilter(r)
	page, err := c.d.Audit.Entries(r.Context(), c.d.DB, u.principal.TenantID, f)
	if errors.Is(err, projections.ErrBadCursor) {
		http.Redirect(w, r, "/console/audit?"+filterQuery(vals), http.StatusSeeOther)
		return nil
	}
	if err != nil {
		return err
	}
	rows := make([]auditRow, 0, len(page.Entries))
	for _, e := range page.Entries {
		rows = append(rows, auditRow{Seq: e.Seq, At: stamp(e.At), Event: words(e.EventType), Type: e.EventType,
			Connection: e.ConnectionID, Actor: c.actor(r.Context(), u.principal.TenantID, e.Actor), ActorID: e.Actor, Reason: e.Reason, Hash: e.Hash})
	}
	data := map[string]any{"Title": "Audit trail", "Rows": rows, "F": vals, "Types": auditTypes,
		"Export": "/console/audit/export.csv?" + filterQuery(vals), "Flash": c.popFlash(r),
		"Paged": f.Cursor != ""}
	if page.NextCursor != "" {
		data["Next"] = "/console/audit?" + filterQuery(vals, "cursor", page.NextCursor)
	}
	if f.Cursor != "" {
		data["First"] = "/console/audit?" + filterQuery(vals)
	}
	c.render(w, r, http.StatusOK, "audit", data)
	return nil
}

// auditExport writes every entry matching the filter as CSV (the API's columns).
func (c *Console) auditExport(w http.ResponseWriter, r *http.Request) error {
	u := userOf(r.Context())
	f, _ := c.auditFilter(r)
	f.Cursor, f.Limit = "", 1000
	page, err := c.d.Audit.Entries(r.Context(), c.d.DB, u.principal.TenantID, f)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="audit-`+u.principal.TenantID+`.csv"`)
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{"seq", "at", "event_type", "connection_id", "actor", "reason", "stream", "event_id", "details", "prev_hash", "hash"})
	for {
		for _, e := range page.Entries {
			_ = cw.Write([]string{strconv.FormatUint(e.Seq, 10), e.At.Format(time.RFC3339Nano), e.EventType, e.ConnectionID,
				e.Actor, e.Reason, e.Stream, e.EventID.String(), string(e.Details), e.PrevHash, e.Hash})
		}
		cw.Flush()
		if page.NextCursor == "" || r.Context().Err() != nil {
			return nil
		}
		f.Cursor = page.NextCursor
		if page, err = c.d.Audit.Entries(r.Context(), c.d.DB, u.principal.TenantID, f); err != nil {
			c.log.ErrorContext(r.Context(), "console: audit export interrupted", "error", err)
			return nil
		}
	}
}

func (c *Console) auditVerify(w http.ResponseWriter, r *http.Request) error {
	u := userOf(r.Context())
	v, err := c.d.Audit.Verify(r.Context(), c.d.DB, u.principal.TenantID)
	if err != nil {
		return err
	}
	if v.OK {
		c.setFlash(r, flash{Tone: "ok", Text: fmt.Sprintf("The hash chain verifies: %d entries checked; head %s", v.Checked, short(v.Head))})
	} else {
		c.setFlash(r, flash{Tone: "bad", Text: fmt.Sprintf("The hash chain does NOT verify: entry %d — %s (%d entries checked).", v.FirstBadSeq, v.Problem, v.Checked)})
	}
	http.Redirect(w, r, "/console/audit", http.StatusSeeOther)
	return nil
}

func short(s string) string {
	if len(s) > 12 {
		return s[:12] + "…"
	}
	return s
}

// series are the analytics chart's bars, in drawing order.
var series = []struct{ Key, Label, Class string }{
	{"sent", "Sent", "s-sent"}, {"delivered", "Delivered", "s-delivered"}, {"failed", "Failed", "s-failed"}, {"purged", "Purged", "s-purged"},
}

type dayTotals struct {
	Day                                                                 string
	Queued, Sent, Delivered, Read, Failed, Expired, Purged, Bans, Clear uint64
}

func (c *Console) analyticsPage(w http.ResponseWriter, r *http.Request) error {
	u := userOf(r.Context())
	q := projections.AnalyticsQuery{ConnectionID: strings.TrimSpace(r.URL.Query().Get("connection"))}
	var fromS, toS string
	q.From, fromS = dayParam(r, "from")
	q.To, toS = dayParam(r, "to")
	if q.From.IsZero() && q.To.IsZero() {
		q.From = c.d.Now().UTC().AddDate(0, 0, -13).Truncate(24 * time.Hour)
		fromS = q.From.Format(time.DateOnly)
	}
	rows, err := c.d.Analytics.Daily(r.Context(), c.d.DB, u.principal.TenantID, q)
	if err != nil {
		return err
	}
	byDay := map[string]*dayTotals{}
	for _, d := range rows {
		k := d.Day.Format(time.DateOnly)
		t := byDay[k]
		if t == nil {
			t = &dayTotals{Day: k}
			byDay[k] = t
		}
		t.Queued += d.Queued
		t.Sent += d.Sent
		t.Delivered += d.Delivered
		t.Read += d.Read
		t.Failed += d.Failed
		t.Expired += d.Expired
		t.Purged += d.Purged
		t.Bans += d.Bans
		t.Clear += d.Clears
	}
	// Every day of the range is on the chart, the quiet ones too (at most 92).
	first, last := q.From, q.To
	if last.IsZero() {
		last = c.d.Now().UTC().Truncate(24 * time.Hour)
	}
	if first.IsZero() && len(rows) > 0 {
		first = rows[0].Day
	}
	var days []dayTotals
	for d := first; !d.After(last) && len(days) < 92 && !first.IsZero(); d = d.AddDate(0, 0, 1) {
		k := d.Format(time.DateOnly)
		if t := byDay[k]; t != nil {
			days = append(days, *t)
			delete(byDay, k)
		} else {
			days = append(days, dayTotals{Day: k})
		}
	}
	for _, t := range byDay { // outside the range shown (a filter beyond 92 days)
		days = append(days, *t)
	}
	sort.Slice(days, func(i, j int) bool { return days[i].Day < days[j].Day })
	data := map[string]any{"Title": "Analytics", "Rows": rows, "Chart": chartSVG(days), "Days": days,
		"F": map[string]string{"connection": q.ConnectionID, "from": fromS, "to": toS}, "Series": series}
	c.render(w, r, http.StatusOK, "analytics", data)
	return nil
}

// chartSVG draws the days' sent, delivered, failed and purged counts as grouped bars, with a
// red mark on days with a ban. Colours come from the stylesheet (classes), so the SVG has no
// inline style.
func chartSVG(days []dayTotals) template.HTML {
	const w, h, left, bottom, top = 1000, 260, 48, 28, 14
	if len(days) == 0 {
		return ""
	}
	var any uint64
	for _, d := range days {
		any += d.Sent + d.Delivered + d.Failed + d.Purged + d.Bans
	}
	if any == 0 {
		return ""
	}
	var maxV uint64 = 1
	for _, d := range days {
		maxV = max(maxV, d.Sent, d.Delivered, d.Failed, d.Purged)
	}
	plotH := float64(h - bottom - top)
	slot := float64(w-left) / float64(len(days))
	bar := min(slot*0.8/4, 18)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" viewBox="0 0 %d %d" role="img" aria-labelledby="chart-title"><title id="chart-title">Messages per day: sent, delivered, failed, purged</title>`, w, h)
	for i := 0; i <= 4; i++ { // grid and scale
		y := float64(top) + plotH*float64(i)/4
		v := maxV - maxV*uint64(i)/4
		fmt.Fprintf(&b, `<line class="grid" x1="%d" x2="%d" y1="%.1f" y2="%.1f"/><text class="axis" x="%d" y="%.1f" text-anchor="end">%d</text>`,
			left, w, y, y, left-6, y+4, v)
	}
	for i, d := range days {
		x0 := float64(left) + slot*float64(i) + (slot-bar*4)/2
		vals := []uint64{d.Sent, d.Delivered, d.Failed, d.Purged}
		for j, v := range vals {
			bh := plotH * float64(v) / float64(maxV)
			fmt.Fprintf(&b, `<rect class="%s" x="%.1f" y="%.1f" width="%.1f" height="%.1f"><title>%s %s: %d</title></rect>`,
				series[j].Class, x0+bar*float64(j), float64(top)+plotH-bh, bar-1, bh, d.Day, series[j].Label, v)
		}
		if d.Bans > 0 {
			fmt.Fprintf(&b, `<circle class="ban" cx="%.1f" cy="%d" r="4"><title>%s: %d ban(s)</title></circle>`, x0+bar*2, top, d.Day, d.Bans)
		}
		if step := (len(days) + 14) / 15; i%step == 0 {
			fmt.Fprintf(&b, `<text class="axis" x="%.1f" y="%d" text-anchor="middle">%s</text>`, x0+bar*2, h-8, d.Day[5:])
		}
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

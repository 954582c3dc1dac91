package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/pgcluster/pgtest"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/domain/invariants"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// api is a client of one node's HTTP API with one key. Like the Go client, it sends the
// greatest Waqueue-Position it was answered as Waqueue-Min-Position, and asks a GET answered
// Waqueue-Position-Reached: false again until it is true (or ctx ends): on a loaded machine the
// read models may lag past the server's 2 s bound, and a read without the test's own write is
// not a finding (a clean-clone CI run failed TestLoadWithClearsBansAndLifts with a 404 for a
// connection just registered).
type api struct {
	base, key string
	http      *http.Client

	mu   sync.Mutex
	last string // greatest Waqueue-Position answered ("<commit>/<prepare>"), "" when none
}

func newAPI(base, key string) *api {
	// Generous: a loaded 2-core machine is slow, but a request must never hang forever.
	return &api{base: base, key: key, http: &http.Client{Timeout: 60 * time.Second}}
}

// response is one answer of the API.
type response struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r response) decode(out any) error {
	if err := json.Unmarshal(r.Body, out); err != nil {
		return fmt.Errorf("decode %q: %w", r.Body, err)
	}
	return nil
}

// call sends one request; err is a transport error (no answer), never a status. headers
// override the Waqueue-Min-Position it sends (an empty value sends none).
func (a *api) call(ctx context.Context, method, path string, body any, headers map[string]string) (response, error) {
	for pause := 20 * time.Millisecond; ; pause = min(2*pause, 500*time.Millisecond) {
		res, asked, err := a.send(ctx, method, path, body, headers)
		if err != nil || method != http.MethodGet || !asked || res.Header.Get("Waqueue-Position-Reached") != "false" {
			return res, err
		}
		select {
		case <-ctx.Done():
			return res, nil
		case <-time.After(pause):
		}
	}
}

func (a *api) send(ctx context.Context, method, path string, body any, headers map[string]string) (response, bool, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return response{}, false, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, rd)
	if err != nil {
		return response{}, false, err
	}
	req.Header.Set("Authorization", "Bearer "+a.key)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	a.mu.Lock()
	if a.last != "" {
		req.Header.Set("Waqueue-Min-Position", a.last)
	}
	a.mu.Unlock()
	for k, v := range headers {
		if v == "" {
			req.Header.Del(k)
			continue
		}
		req.Header.Set(k, v)
	}
	res, err := a.http.Do(req)
	if err != nil {
		return response{}, false, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return response{}, false, err
	}
	if pos := res.Header.Get("Waqueue-Position"); pos != "" {
		a.mu.Lock()
		if positionLess(a.last, pos) {
			a.last = pos
		}
		a.mu.Unlock()
	}
	return response{Status: res.StatusCode, Header: res.Header, Body: b}, req.Header.Get("Waqueue-Min-Position") != "", nil
}

// positionLess reports whether position a ("" or "<commit>/<prepare>") is before b.
func positionLess(a, b string) bool {
	parse := func(s string) (x, y uint64, ok bool) {
		c, p, found := strings.Cut(s, "/")
		if !found {
			return 0, 0, false
		}
		_, err1 := fmt.Sscan(c, &x)
		_, err2 := fmt.Sscan(p, &y)
		return x, y, err1 == nil && err2 == nil
	}
	bx, by, ok := parse(b)
	if !ok {
		return false
	}
	ax, ay, ok := parse(a)
	return !ok || ax < bx || ax == bx && ay < by
}

// must sends one request and fails t unless the answer has status want; out, if not nil, receives
// the decoded body.
func (a *api) must(t testing.TB, ctx context.Context, method, path string, body any, headers map[string]string, want int, out any) response {
	t.Helper()
	res, err := a.call(ctx, method, path, body, headers)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	if res.Status != want {
		t.Fatalf("%s %s: status %d, want %d: %s", method, path, res.Status, want, res.Body)
	}
	if out != nil {
		if err := res.decode(out); err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
	}
	return res
}

// card is the part of a connection card the tests read.
type card struct {
	LinkStatus  string `json:"link_status"`
	QueueStatus string `json:"queue_status"`
	Pending     uint64 `json:"pending"`
	InFlight    uint64 `json:"in_flight"`
}

func (a *api) card(t testing.TB, ctx context.Context, id string) card {
	t.Helper()
	var c card
	a.must(t, ctx, "GET", "/v1/connections/"+id, nil, nil, http.StatusOK, &c)
	return c
}

// register creates connection id with phone and waits until its link is active (the simulator
// pairs new connections silently).
func (a *api) register(t testing.TB, ctx context.Context, id, phone string) {
	t.Helper()
	a.must(t, ctx, "POST", "/v1/connections", map[string]any{"id": id, "phone": phone}, nil, http.StatusCreated, nil)
	waitFor(t, ctx, id+" active", func() bool { return a.card(t, ctx, id).LinkStatus == "active" })
}

// recorded is one event of a connection's history as the API returns it, decoded.
type recorded struct {
	Revision   uint64
	Type       string
	RecordedAt time.Time
	Event      connection.Event
}

// history reads connection id's whole event history through GET …/history and decodes it.
func (a *api) history(t testing.TB, ctx context.Context, id string) []recorded {
	t.Helper()
	var out []recorded
	cursor := "0"
	for cursor != "" {
		var page struct {
			Events []struct {
				Revision   uint64          `json:"revision"`
				Type       string          `json:"type"`
				RecordedAt time.Time       `json:"recorded_at"`
				Data       json.RawMessage `json:"data"`
			} `json:"events"`
			NextCursor string `json:"next_cursor"`
		}
		a.must(t, ctx, "GET", "/v1/connections/"+id+"/history?limit=1000&cursor="+cursor, nil, nil, http.StatusOK, &page)
		for _, e := range page.Events {
			ev, err := connection.Decode(e.Type, e.Data)
			if err != nil {
				t.Fatalf("history of %s: revision %d: %v", id, e.Revision, err)
			}
			out = append(out, recorded{Revision: e.Revision, Type: e.Type, RecordedAt: e.RecordedAt, Event: ev})
		}
		cursor = page.NextCursor
	}
	return out
}

// check runs invariants.Check over h and sends and fails t with every violation.
func check(t testing.TB, id string, h []recorded, sends []invariants.Send) invariants.Report {
	t.Helper()
	in := make([]invariants.Recorded, len(h))
	for i, e := range h {
		in[i] = invariants.Recorded{Revision: e.Revision, Event: e.Event}
	}
	rep := invariants.Check(in, sends)
	if len(rep.Violations) > 0 {
		t.Errorf("%s: history before the first violation:\n%s", id, window(h, rep.Violations[0].Revision, 25))
	}
	for i, v := range rep.Violations {
		if i == 20 {
			t.Errorf("%s: … %d violations in all", id, len(rep.Violations))
			break
		}
		t.Errorf("%s: %v", id, v)
	}
	return rep
}

// settled reports whether every message of the report reached an end: nothing pending, nothing in
// flight, and the ends add up to what was queued (G3).
func settled(rep invariants.Report) error {
	if len(rep.Pending) > 0 || len(rep.InFlight) > 0 {
		return fmt.Errorf("%d pending, %d in flight", len(rep.Pending), len(rep.InFlight))
	}
	if got := rep.Purged + rep.Expired + rep.Acknowledged; got != rep.Queued {
		return fmt.Errorf("purged %d + expired %d + acknowledged %d = %d, queued %d",
			rep.Purged, rep.Expired, rep.Acknowledged, got, rep.Queued)
	}
	return nil
}

// waitFor polls cond until it holds, failing t when ctx ends first.
func waitFor(t testing.TB, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// problem is an application/problem+json body.
type problem struct {
	Status int    `json:"status"`
	Code   string `json:"code"`
	Detail string `json:"detail"`
}

var errNoProblem = errors.New("not a problem+json body")

func asProblem(r response) (problem, error) {
	var p problem
	if ct := r.Header.Get("Content-Type"); len(ct) < 24 || ct[:24] != "application/problem+json" {
		return p, fmt.Errorf("%w: content type %q", errNoProblem, ct)
	}
	if err := json.Unmarshal(r.Body, &p); err != nil {
		return p, fmt.Errorf("%w: %v", errNoProblem, err)
	}
	return p, nil
}

// messageQueued returns the id of the message a MessageQueued event queues.
func messageQueued(e recorded) (uuid.UUID, bool) {
	q, ok := e.Event.(connection.MessageQueued)
	return q.MessageID, ok
}

// window renders the link and queue events of h up to revision rev (the last n of them) and the
// event at rev, for failure messages.
func window(h []recorded, rev uint64, n int) string {
	var lines []string
	for _, e := range h {
		if e.Revision > rev {
			break
		}
		switch e.Event.(type) {
		case connection.MessageQueued, connection.MessageSent, connection.MessageDelivered, connection.MessageRead,
			connection.MessageFailed, connection.MessageOutcomeUnknown, connection.MessageExpired:
			continue // message traffic; the link and queue events say why a dispatch was allowed
		case connection.MessageDispatched:
			if e.Revision != rev {
				continue
			}
		}
		lines = append(lines, fmt.Sprintf("  %d %s %+v", e.Revision, e.Type, e.Event))
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

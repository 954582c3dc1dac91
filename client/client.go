// Package client is the Go client of the waqueue HTTP API, and what the waqueue command line is
// built on: one method per route (a test holds it to the server's route table), API problems
// (application/problem+json) returned as *Problem with waqueue's stable code (IsCode), an
// Idempotency-Key on the calls that take one (NewIdempotencyKey), paged reads as iterators
// (History, AuditEntries, Checkpoints, WebhookDeliveries: iter.Seq2 that read pages as the
// loop goes), and webhook signature verification for receivers (VerifyWebhookSignature).
//
// Some methods return the raw JSON body besides a decoded value, so a tool can print exactly
// what the server answered.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DefaultConsistencyWait is Client.ConsistencyWait's default: long enough for a busy server's
// read models to catch up after a restart.
const DefaultConsistencyWait = 60 * time.Second

// HeaderPositionReached is the server's answer to Waqueue-Min-Position: "true" when the view
// reflects every event up to the asked position, "false" when it is older.
const HeaderPositionReached = "Waqueue-Position-Reached"

// Client calls one waqueue server with one API key. It is safe for concurrent use.
//
// Read your writes: the client keeps the greatest Waqueue-Position the server answered (or was
// given with SetMinPosition) and sends it as Waqueue-Min-Position with every request, so every
// read reflects the writes made through it before. The server bounds its wait for the read
// models (2 s by default) and then answers what they hold with Waqueue-Position-Reached: false;
// the client asks again, with a growing pause, until the answer says true, the call's context
// ends or ConsistencyWait has passed — only then does it return the older view. A command
// answered with a read-model view that has not reached the command's own position (register,
// hold, resume, settings answer the card) is followed by a read of the card that does the same.
type Client struct {
	base *url.URL
	key  string
	http *http.Client

	// ConsistencyWait bounds how long a read asks again for a view that reflects the client's
	// writes (zero: DefaultConsistencyWait; negative: never ask again). Set it before use.
	ConsistencyWait time.Duration

	mu         sync.Mutex
	pos        [2]uint64 // greatest position seen (commit, prepare); zero when none
	onPosition func(string)
}

// SetMinPosition makes the client ask every read to reflect pos ("<commit>/<prepare>", as the
// server answers it in Waqueue-Position) unless it has seen a greater one. A malformed pos is
// ignored. onChange, if not nil, is called with every greater position the server answers
// later (a tool saves it for its next run).
func (c *Client) SetMinPosition(pos string, onChange func(string)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.onPosition = onChange
	if p, ok := parsePosition(pos); ok && less(c.pos, p) {
		c.pos = p
	}
}

// MinPosition returns the position the client sends as Waqueue-Min-Position ("" when none).
func (c *Client) MinPosition() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pos == [2]uint64{} {
		return ""
	}
	return fmt.Sprintf("%d/%d", c.pos[0], c.pos[1])
}

func (c *Client) sawPosition(v string) {
	p, ok := parsePosition(v)
	if !ok {
		return
	}
	c.mu.Lock()
	greater := less(c.pos, p)
	if greater {
		c.pos = p
	}
	cb := c.onPosition
	c.mu.Unlock()
	if greater && cb != nil {
		cb(v)
	}
}

func parsePosition(s string) ([2]uint64, bool) {
	a, b, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok {
		return [2]uint64{}, false
	}
	x, err1 := strconv.ParseUint(a, 10, 64)
	y, err2 := strconv.ParseUint(b, 10, 64)
	return [2]uint64{x, y}, err1 == nil && err2 == nil
}

func less(p, q [2]uint64) bool { return p[0] < q[0] || p[0] == q[0] && p[1] < q[1] }

// New returns a Client of the server at baseURL ("http://127.0.0.1:8080") that authenticates
// with key (none when empty). hc defaults to a client without a timeout: exports and uploads
// can take long, and callers bound each call with its context.
func New(baseURL, key string, hc *http.Client) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil {
		return nil, fmt.Errorf("client: server URL %q: %w", baseURL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("client: server URL %q: want http(s)://host[:port]", baseURL)
	}
	if hc == nil {
		hc = &http.Client{}
	}
	return &Client{base: u, key: key, http: hc}, nil
}

// Problem is an error the API answered (RFC 9457 problem details with waqueue's stable code).
type Problem struct {
	Type     string `json:"type"`
	Title    string `json:"title"`
	Status   int    `json:"status"`
	Detail   string `json:"detail,omitempty"`
	Code     string `json:"code"`
	Field    string `json:"field,omitempty"`
	Instance string `json:"instance,omitempty"`
}

// Error is "<title>: <detail> (<code>)".
func (p *Problem) Error() string {
	title := p.Title
	if title == "" {
		title = http.StatusText(p.Status)
	}
	detail := p.Detail
	if p.Field != "" {
		detail = p.Field + ": " + detail
	}
	if detail == "" {
		return fmt.Sprintf("%s (%s)", title, p.Code)
	}
	return fmt.Sprintf("%s: %s (%s)", title, detail, p.Code)
}

// StatusError is a failed response that is not a problem document (a proxy's error page, say).
type StatusError struct {
	Method, URL string
	Status      int
	Body        string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("client: %s %s: %d %s: %q", e.Method, e.URL, e.Status, http.StatusText(e.Status), e.Body)
}

// request describes one call.
type request struct {
	method, path string
	query        url.Values
	body         io.Reader
	contentType  string
	header       map[string]string
	length       int64 // of body when known (> 0)
}

// do sends rq and returns the successful response, whose body the caller closes. A failed
// response is returned as *Problem (or *StatusError). A GET that asked for the client's
// position and was answered from an older view (Waqueue-Position-Reached: false) is sent
// again, with a growing pause, until the view reaches it or ConsistencyWait has passed.
func (c *Client) do(ctx context.Context, rq request) (*http.Response, error) {
	var start time.Time
	pause := 50 * time.Millisecond
	for {
		resp, asked, err := c.send(ctx, rq)
		if err != nil {
			return nil, err
		}
		if rq.method != http.MethodGet || !asked || resp.Header.Get(HeaderPositionReached) != "false" {
			return c.answer(rq, resp)
		}
		if start.IsZero() {
			start = time.Now()
		}
		wait := c.ConsistencyWait
		if wait == 0 {
			wait = DefaultConsistencyWait
		}
		if time.Since(start)+pause > wait {
			return c.answer(rq, resp) // the older view, labelled so by its header
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		_ = resp.Body.Close()
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("client: %s %s: waiting for the read models to reach %s: %w", rq.method, rq.path, c.MinPosition(), ctx.Err())
		case <-t.C:
		}
		pause = min(2*pause, time.Second)
	}
}

// send sends rq once; asked reports whether it carried Waqueue-Min-Position.
func (c *Client) send(ctx context.Context, rq request) (resp *http.Response, asked bool, err error) {
	u := *c.base
	u.Path = c.base.Path + rq.path
	u.RawQuery = rq.query.Encode()
	req, err := http.NewRequestWithContext(ctx, rq.method, u.String(), rq.body)
	if err != nil {
		return nil, false, fmt.Errorf("client: %w", err)
	}
	if rq.length > 0 {
		req.ContentLength = rq.length
	}
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	if rq.contentType != "" {
		req.Header.Set("Content-Type", rq.contentType)
	}
	if pos := c.MinPosition(); pos != "" {
		req.Header.Set("Waqueue-Min-Position", pos)
		asked = true
	}
	for k, v := range rq.header {
		if v != "" {
			req.Header.Set(k, v)
		}
	}
	resp, err = c.http.Do(req)
	if err != nil {
		return nil, false, fmt.Errorf("client: %w", err)
	}
	c.sawPosition(resp.Header.Get("Waqueue-Position"))
	return resp, asked, nil
}

// answer returns a successful response as is and turns a failed one into *Problem (or
// *StatusError), closing it.
func (c *Client) answer(rq request, resp *http.Response) (*http.Response, error) {
	if resp.StatusCode < 300 {
		return resp, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt == "application/problem+json" {
		p := &Problem{}
		if json.Unmarshal(b, p) == nil && p.Code != "" {
			if p.Status == 0 {
				p.Status = resp.StatusCode
			}
			return nil, p
		}
	}
	return nil, &StatusError{Method: rq.method, URL: resp.Request.URL.String(), Status: resp.StatusCode, Body: string(b)}
}

// raw sends rq and returns the whole response body.
func (c *Client) raw(ctx context.Context, rq request) (json.RawMessage, error) {
	b, _, err := c.rawHeader(ctx, rq)
	return b, err
}

// rawHeader is raw with the response's header.
func (c *Client) rawHeader(ctx context.Context, rq request) (json.RawMessage, http.Header, error) {
	resp, err := c.do(ctx, rq)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, fmt.Errorf("client: read %s %s: %w", rq.method, rq.path, err)
	}
	return b, resp.Header, nil
}

// cardCommand sends a command answered with the connection card of conn and decodes it into
// card. When the server answered a card older than the command's own write
// (Waqueue-Position-Reached: false), it reads the card again, which waits for it.
func (c *Client) cardCommand(ctx context.Context, rq request, conn string, card *Card) (json.RawMessage, error) {
	b, h, err := c.rawHeader(ctx, rq)
	if err != nil {
		return b, err
	}
	if h.Get(HeaderPositionReached) == "false" && c.ConsistencyWait >= 0 {
		if conn == "" {
			var got Card
			if json.Unmarshal(b, &got) == nil {
				conn = got.ID
			}
		}
		if conn != "" {
			if fresh, ferr := c.raw(ctx, request{method: http.MethodGet, path: "/v1/connections/" + seg(conn)}); ferr == nil {
				b = fresh
			}
		}
	}
	if len(b) == 0 {
		return b, nil
	}
	if err := json.Unmarshal(b, card); err != nil {
		return b, fmt.Errorf("client: decode answer of %s %s: %w", rq.method, rq.path, err)
	}
	return b, nil
}

// call sends rq and decodes the JSON answer into out (unless out is nil), returning the body.
func (c *Client) call(ctx context.Context, rq request, out any) (json.RawMessage, error) {
	b, err := c.raw(ctx, rq)
	if err != nil || out == nil || len(b) == 0 {
		return b, err
	}
	if err := json.Unmarshal(b, out); err != nil {
		return b, fmt.Errorf("client: decode answer of %s %s: %w", rq.method, rq.path, err)
	}
	return b, nil
}

func jsonBody(v any) (io.Reader, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("client: encode request: %w", err)
	}
	return bytes.NewReader(b), nil
}

func (c *Client) postJSON(ctx context.Context, path string, in any, header map[string]string, out any) (json.RawMessage, error) {
	body, err := jsonBody(in)
	if err != nil {
		return nil, err
	}
	return c.call(ctx, request{method: http.MethodPost, path: path, body: body, contentType: "application/json", header: header}, out)
}

func (c *Client) get(ctx context.Context, path string, q url.Values, out any) (json.RawMessage, error) {
	return c.call(ctx, request{method: http.MethodGet, path: path, query: q}, out)
}

func seg(s string) string { return url.PathEscape(s) }

// IsCode reports whether err is a *Problem with the given code.
func IsCode(err error, code string) bool {
	var p *Problem
	return errors.As(err, &p) && p.Code == code
}

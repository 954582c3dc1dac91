package apitest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"

	"github.com/waqueue/waqueue/adapters/console"
	"github.com/waqueue/waqueue/docs"
)

// Contract is docs/openapi.yaml, loaded and validated by kin-openapi (a maintained OpenAPI 3
// implementation), to hold the API's responses to it. Make one with LoadContract.
type Contract struct {
	Doc    *openapi3.T
	router routers.Router
}

var (
	contractOnce sync.Once
	contract     *Contract
	contractErr  error
)

// LoadContract parses docs/openapi.yaml, validates it as an OpenAPI document and returns it
// (loaded once per process).
func LoadContract() (*Contract, error) {
	contractOnce.Do(func() { contract, contractErr = loadContract(docs.OpenAPI) })
	return contract, contractErr
}

func loadContract(b []byte) (*Contract, error) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(b)
	if err != nil {
		return nil, fmt.Errorf("docs/openapi.yaml does not parse: %w", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		return nil, fmt.Errorf("docs/openapi.yaml is not a valid OpenAPI document: %w", err)
	}
	// Routes are matched by path only: the document's example server is not the test server.
	doc.Servers = nil
	r, err := legacy.NewRouter(doc)
	if err != nil {
		return nil, fmt.Errorf("docs/openapi.yaml: %w", err)
	}
	return &Contract{Doc: doc, router: r}, nil
}

func init() {
	// PNG QR codes are binary bodies (the schema says format: binary); nothing to decode.
	openapi3filter.RegisterBodyDecoder("image/png", openapi3filter.FileBodyDecoder)
	// The API reference page and its vendored Redoc bundle are documented as strings.
	openapi3filter.RegisterBodyDecoder("text/html", openapi3filter.FileBodyDecoder)
	openapi3filter.RegisterBodyDecoder("text/javascript", openapi3filter.FileBodyDecoder)
	// JSON Lines exports are documented as a string (OpenAPI 3.0 has no schema per line); each
	// line must still be one JSON object.
	openapi3filter.RegisterBodyDecoder("application/x-ndjson", func(body io.Reader, _ http.Header, _ *openapi3.SchemaRef, _ openapi3filter.EncodingFn) (any, error) {
		b, err := io.ReadAll(body)
		if err != nil {
			return nil, err
		}
		for i, line := range bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n")) {
			var obj map[string]any
			if len(b) > 0 && json.Unmarshal(line, &obj) != nil {
				return nil, fmt.Errorf("line %d is not a JSON object: %q", i+1, clip(line, 200))
			}
		}
		return string(b), nil
	})
}

// Check reports how a response breaks the contract, or nil. It is checked against the operation
// documented for the request's method and path: the status must be documented for it, the
// Content-Type must be one documented for that status, and the body must match its schema.
// A request for a path or method the API does not serve, answered 404 or 405 with a problem,
// is in the contract (the catch-all route). The operator console (/console/) is not the API and
// is not checked. Errors name the method, the path, the operation,
// the status and the broken rule, so that whoever changed the API or the document can fix it.
func (c *Contract) Check(req *http.Request, status int, header http.Header, body []byte) error {
	if req.Method == http.MethodHead || req.Method == http.MethodOptions || isConsole(req.URL.Path) {
		return nil
	}
	at := req.Method + " " + req.URL.Path
	ct := header.Get("Content-Type")
	route, params, err := c.router.FindRoute(req)
	if err != nil {
		if (status == http.StatusNotFound || status == http.StatusMethodNotAllowed) && strings.HasPrefix(ct, "application/problem+json") {
			return nil // the catch-all answer for routes the API does not have
		}
		return fmt.Errorf("openapi: %s answered %d, but docs/openapi.yaml documents no such operation (%v): document the route", at, status, err)
	}
	op := route.Method + " " + route.Path
	resp := route.Operation.Responses.Status(status)
	if resp == nil {
		resp = route.Operation.Responses.Default()
	}
	if resp == nil {
		return fmt.Errorf("openapi: %s (operation %s) answered %d, which docs/openapi.yaml does not document for the operation (documented: %s)",
			at, op, status, documented(route.Operation.Responses))
	}
	if resp.Value != nil && len(resp.Value.Content) > 0 && resp.Value.Content.Get(ct) == nil {
		return fmt.Errorf("openapi: %s (operation %s) answered %d with Content-Type %q; docs/openapi.yaml documents %s for %d",
			at, op, status, ct, mediaTypes(resp.Value.Content), status)
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route},
		Status:                 status,
		Header:                 header,
		Options:                &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	}
	in.SetBodyBytes(body)
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		return fmt.Errorf("openapi: %s (operation %s) answered %d %s: %s; body %s", at, op, status, ct, describe(err), clip(body, 600))
	}
	return nil
}

func mediaTypes(c openapi3.Content) string {
	var out []string
	for k := range c {
		out = append(out, k)
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

// documented lists an operation's documented statuses.
func documented(rs *openapi3.Responses) string {
	var out []string
	for k := range rs.Map() {
		out = append(out, k)
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

// describe turns a validation error into "body at /pointer (schema rule "field"): reason" items.
func describe(err error) string {
	var items []string
	var walk func(error)
	walk = func(err error) {
		var me openapi3.MultiError
		if errors.As(err, &me) {
			for _, e := range me {
				walk(e)
			}
			return
		}
		var se *openapi3.SchemaError
		if errors.As(err, &se) {
			ptr := "/" + strings.Join(se.JSONPointer(), "/")
			items = append(items, fmt.Sprintf("body at %s (schema rule %q): %s", ptr, se.SchemaField, se.Reason))
			return
		}
		var re *openapi3filter.ResponseError
		if errors.As(err, &re) && re.Err != nil {
			walk(re.Err)
			if len(items) > 0 {
				return
			}
		}
		items = append(items, err.Error())
	}
	walk(err)
	if len(items) > 5 {
		items = append(items[:5], "… "+strconv.Itoa(len(items)-5)+" more")
	}
	return strings.Join(items, "; ")
}

func clip(b []byte, n int) string {
	if len(b) > n {
		return strconv.Quote(string(b[:n])) + "…"
	}
	return strconv.Quote(string(b))
}

// Middleware serves next and checks every response against c, reporting each breach to report
// (from the serving goroutine: report must be safe for concurrent use, as testing.T.Errorf is).
// Streaming is not supported: the response is passed through and copied as it is written.
func (c *Contract) Middleware(next http.Handler, report func(error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isConsole(r.URL.Path) {
			next.ServeHTTP(w, r) // HTML pages and a live event stream: not the API, not recorded
			return
		}
		rec := &recorder{ResponseWriter: w}
		// The handler may read and close the request body; the check needs only its URL and method.
		probe := r.Clone(r.Context())
		probe.Body = io.NopCloser(bytes.NewReader(nil))
		next.ServeHTTP(rec, r)
		if rec.status == 0 {
			rec.status = http.StatusOK
		}
		if err := c.Check(probe, rec.status, w.Header(), rec.body.Bytes()); err != nil {
			report(err)
		}
	})
}

// recorder passes a response through and keeps its status and body.
type recorder struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	r.body.Write(b)
	return r.ResponseWriter.Write(b)
}

// Flush passes a flush through when the underlying writer supports it.
func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// isConsole reports whether path is the operator console's (HTML pages under /console/, not
// part of the JSON API, so not in docs/openapi.yaml; see docs/console.md).
func isConsole(path string) bool {
	return strings.HasPrefix(path, console.Prefix) || path == strings.TrimSuffix(console.Prefix, "/")
}

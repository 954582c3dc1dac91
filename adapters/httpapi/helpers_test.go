package httpapi_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/waqueue/waqueue/adapters/httpapi/apitest"
	"github.com/waqueue/waqueue/adapters/pgcluster/pgtest"
	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/internal/testwait"
)

// observed collects every (route pattern, status) any test server answered, from its metrics,
// so that TestMain can hold the OpenAPI document to what the API really answers.
var observed = struct {
	sync.Mutex
	m map[string]map[int]bool
}{m: map[string]map[int]bool{}}

func collect(reg *prometheus.Registry) {
	mfs, err := reg.Gather()
	if err != nil {
		return
	}
	observed.Lock()
	defer observed.Unlock()
	for _, mf := range mfs {
		if mf.GetName() != "waqueue_http_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var route string
			var code int
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "route":
					route = l.GetValue()
				case "code":
					code, _ = strconv.Atoi(l.GetValue())
				}
			}
			if observed.m[route] == nil {
				observed.m[route] = map[int]bool{}
			}
			observed.m[route][code] = true
		}
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.Shutdown()
	if code == 0 {
		if problems := undocumentedObserved(); len(problems) > 0 {
			fmt.Fprintln(os.Stderr, "FAIL: statuses answered by the API but missing from docs/openapi.yaml:")
			for _, p := range problems {
				fmt.Fprintln(os.Stderr, "  "+p)
			}
			code = 1
		}
	}
	os.Exit(code)
}

// undocumentedObserved lists the observed (route, status) pairs the document lacks.
func undocumentedObserved() []string {
	doc, err := loadOpenAPI()
	if err != nil {
		return []string{err.Error()}
	}
	observed.Lock()
	defer observed.Unlock()
	var out []string
	for route, codes := range observed.m {
		if route == "unmatched" {
			continue
		}
		method, path, _ := strings.Cut(route, " ")
		for c := range codes {
			if !doc.has(method, path, c) {
				out = append(out, fmt.Sprintf("%s %d", route, c))
			}
		}
	}
	sort.Strings(out)
	return out
}

// env is a running server and the keys of each role of two tenants.
type env struct {
	*apitest.Server
	t    *testing.T
	ctx  context.Context
	keys map[string]map[auth.Role]string // tenant -> role -> secret
}

const otherTenant = "other"

func start(t *testing.T, opts apitest.Options) *env {
	t.Helper()
	s := apitest.Start(t, opts)
	t.Cleanup(func() { collect(s.Registry) })
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Limit)
	t.Cleanup(cancel)
	e := &env{Server: s, t: t, ctx: ctx, keys: map[string]map[auth.Role]string{}}
	for _, tenant := range []string{s.Tenant, otherTenant} {
		e.keys[tenant] = map[auth.Role]string{}
		for _, role := range auth.Roles() {
			k, err := s.Key(ctx, tenant, role)
			if err != nil {
				t.Fatalf("create %s key of %s: %v", role, tenant, err)
			}
			e.keys[tenant][role] = k
		}
	}
	return e
}

func (e *env) key(tenant string, role auth.Role) string { return e.keys[tenant][role] }
func (e *env) admin() string                            { return e.key(e.Tenant, auth.RoleAdmin) }

// metrics returns the node's metrics, from the metrics handler (not the API).
func (e *env) metrics() string {
	e.t.Helper()
	req, _ := http.NewRequestWithContext(e.ctx, "GET", e.MetricsURL+"/metrics", nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		e.t.Fatalf("GET /metrics: %d %s", res.StatusCode, b)
	}
	return string(b)
}

func (e *env) do(key, method, path string, body any, header map[string]string) *apitest.Response {
	e.t.Helper()
	r, err := e.Do(e.ctx, key, method, path, body, header)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	return r
}

func wantStatus(t *testing.T, r *apitest.Response, status int) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status %d, want %d; body %s", r.Status, status, r.Body)
	}
}

// wantProblem checks a problem response's status, content type and code.
func wantProblem(t *testing.T, r *apitest.Response, status int, code string) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status %d, want %d (code %s); body %s", r.Status, status, code, r.Body)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type %q, want application/problem+json; body %s", ct, r.Body)
	}
	m := r.Map()
	if m["code"] != code {
		t.Fatalf("problem code %v, want %s; body %s", m["code"], code, r.Body)
	}
	if int(m["status"].(float64)) != status || m["type"] == "" || m["title"] == "" {
		t.Fatalf("incomplete problem document %s", r.Body)
	}
}

func (e *env) sync() {
	e.t.Helper()
	if err := e.Sync(e.ctx); err != nil {
		e.t.Fatal(err)
	}
}

var phoneSeq struct {
	sync.Mutex
	n int
}

// newPhone returns a distinct valid German mobile number.
func newPhone() string {
	phoneSeq.Lock()
	defer phoneSeq.Unlock()
	phoneSeq.n++
	return fmt.Sprintf("+49170%07d", 1000000+phoneSeq.n)
}

// register registers a connection of the key's tenant and returns its id and phone.
func (e *env) register(key string) (string, string) {
	e.t.Helper()
	phone := newPhone()
	r := e.do(key, "POST", "/v1/connections", map[string]any{"phone": phone}, nil)
	wantStatus(e.t, r, 201)
	id, _ := r.Map()["id"].(string)
	if id == "" {
		e.t.Fatalf("no id in %s", r.Body)
	}
	e.sync()
	return id, phone
}

func str(m map[string]any, k string) string {
	s, _ := m[k].(string)
	return s
}

func num(m map[string]any, k string) int {
	f, _ := m[k].(float64)
	return int(f)
}

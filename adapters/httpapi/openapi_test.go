package httpapi_test

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/waqueue/waqueue/adapters/httpapi"
	"github.com/waqueue/waqueue/adapters/httpapi/apitest"
	"github.com/waqueue/waqueue/docs"
)

// openAPI is the part of the document the tests compare: path -> method -> statuses.
type openAPI struct {
	paths map[string]map[string][]int
}

// loadOpenAPI reads the document through kin-openapi (apitest.LoadContract), which refuses a
// document that is not valid OpenAPI 3.
func loadOpenAPI() (*openAPI, error) {
	c, err := apitest.LoadContract()
	if err != nil {
		return nil, err
	}
	if !strings.HasPrefix(c.Doc.OpenAPI, "3.") {
		return nil, fmt.Errorf("docs/openapi.yaml: openapi %q, want 3.x", c.Doc.OpenAPI)
	}
	doc := &openAPI{paths: map[string]map[string][]int{}}
	for path, item := range c.Doc.Paths.Map() {
		doc.paths[path] = map[string][]int{}
		for method, op := range item.Operations() {
			var codes []int
			for code := range op.Responses.Map() {
				n, err := strconv.Atoi(code)
				if err != nil {
					return nil, fmt.Errorf("docs/openapi.yaml: %s %s: response %q is not a status code", method, path, code)
				}
				codes = append(codes, n)
			}
			sort.Ints(codes)
			doc.paths[path][strings.ToUpper(method)] = codes
		}
	}
	return doc, nil
}

func (d *openAPI) has(method, path string, status int) bool {
	return slices.Contains(d.paths[path][method], status)
}

// TestOpenAPIMatchesRoutes holds the document and the route table to each other: every route is
// documented with exactly its statuses, and the document has no operation the API lacks. The
// router (httpapi.New) registers exactly the routes of this table; every response the API tests
// see is also checked against the document by apitest (Contract.Middleware).
func TestOpenAPIMatchesRoutes(t *testing.T) {
	doc, err := loadOpenAPI()
	if err != nil {
		t.Fatal(err)
	}
	registered := map[string]bool{}
	for _, rt := range httpapi.Routes() {
		key := rt.Method + " " + rt.Pattern
		registered[key] = true
		got, ok := doc.paths[rt.Pattern][rt.Method]
		if !ok {
			t.Errorf("%s is not documented", key)
			continue
		}
		if !slices.Equal(got, rt.Statuses) {
			t.Errorf("%s: documented statuses %v, the route answers %v", key, got, rt.Statuses)
		}
	}
	for path, ops := range doc.paths {
		for method := range ops {
			if !registered[method+" "+path] {
				t.Errorf("%s %s is documented but not a route", method, path)
			}
		}
	}
}

// TestOpenAPIServed checks the document is served as is.
func TestOpenAPIServed(t *testing.T) {
	e := start(t, apitestOptions())
	r := e.do("", "GET", "/v1/openapi.yaml", nil, nil)
	wantStatus(t, r, 200)
	if string(r.Body) != string(docs.OpenAPI) {
		t.Fatal("served document differs from docs/openapi.yaml")
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/yaml" {
		t.Fatalf("Content-Type %q", ct)
	}
}

// TestEveryRouteIsServedAndDocumented asks the running API (the router httpapi.New built) for
// every route of the table without a key: each must be served (401 unauthorized, not the
// catch-all 404 "no such route"), and apitest checks the answer against docs/openapi.yaml, so a
// route served but undocumented, or documented without its 401, fails here.
func TestEveryRouteIsServedAndDocumented(t *testing.T) {
	e := start(t, apitestOptions())
	fill := strings.NewReplacer("{id}", "00000000-0000-0000-0000-000000000001", "{key}", "x", "{clear_id}", "00000000-0000-0000-0000-000000000002")
	for _, rt := range httpapi.Routes() {
		if rt.Public {
			continue
		}
		path := fill.Replace(rt.Pattern)
		for strings.Contains(path, "{") { // any other parameter
			i, j := strings.Index(path, "{"), strings.Index(path, "}")
			path = path[:i] + "x" + path[j+1:]
		}
		r := e.do("", rt.Method, path, nil, nil)
		if r.Status != 401 || r.Map()["code"] != "unauthorized" {
			t.Errorf("%s %s (as %s) without a key: %d %s; want 401 unauthorized (is the route registered?)", rt.Method, rt.Pattern, path, r.Status, r.Body)
		}
	}
}

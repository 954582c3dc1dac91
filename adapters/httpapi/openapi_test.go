package httpapi_test

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/waqueue/waqueue/adapters/httpapi"
	"github.com/waqueue/waqueue/docs"
)

// openAPI is the part of the document the tests compare: path -> method -> statuses.
type openAPI struct {
	paths map[string]map[string][]int
}

func loadOpenAPI() (*openAPI, error) {
	var raw struct {
		OpenAPI string                          `yaml:"openapi"`
		Paths   map[string]map[string]yaml.Node `yaml:"paths"`
	}
	if err := yaml.Unmarshal(docs.OpenAPI, &raw); err != nil {
		return nil, fmt.Errorf("docs/openapi.yaml: %w", err)
	}
	if !strings.HasPrefix(raw.OpenAPI, "3.") {
		return nil, fmt.Errorf("docs/openapi.yaml: openapi %q, want 3.x", raw.OpenAPI)
	}
	doc := &openAPI{paths: map[string]map[string][]int{}}
	for path, ops := range raw.Paths {
		doc.paths[path] = map[string][]int{}
		for method, node := range ops {
			if method == "parameters" {
				continue
			}
			var op struct {
				Responses map[string]any `yaml:"responses"`
			}
			if err := node.Decode(&op); err != nil {
				return nil, fmt.Errorf("docs/openapi.yaml: %s %s: %w", method, path, err)
			}
			var codes []int
			for c := range op.Responses {
				n, err := strconv.Atoi(c)
				if err != nil {
					return nil, fmt.Errorf("docs/openapi.yaml: %s %s: response %q is not a status code", method, path, c)
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
// documented with exactly its statuses, and the document has no operation the API lacks.
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

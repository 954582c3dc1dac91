package httpapi_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/waqueue/waqueue/docs"
)

// problemCodes returns the string values of the Code… constants declared in the given Go
// files: every problem code the API can answer is one of them (the API's own in problem.go, the
// domain's validation and refusal codes in domain/connection).
func problemCodes(t *testing.T, files ...string) []string {
	t.Helper()
	var out []string
	fset := token.NewFileSet()
	for _, f := range files {
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			vs, ok := n.(*ast.ValueSpec)
			if !ok {
				return true
			}
			for i, name := range vs.Names {
				if !strings.HasPrefix(name.Name, "Code") || i >= len(vs.Values) {
					continue
				}
				lit, ok := vs.Values[i].(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					continue // e.g. string(connection.CodeTooManyRecipients): the domain's, listed there
				}
				v, err := strconv.Unquote(lit.Value)
				if err != nil {
					t.Fatal(err)
				}
				out = append(out, v)
			}
			return true
		})
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// TestEveryProblemCodeIsDocumented enumerates the problem codes from the source and checks that
// docs/api.md and docs/openapi.yaml both list each one.
func TestEveryProblemCodeIsDocumented(t *testing.T) {
	codes := problemCodes(t, "problem.go", "../../domain/connection/validate.go", "../../domain/connection/status.go")
	for _, must := range []string{"no_recipients", "missing_reason", "queue_clearing", "method_not_allowed", "message_not_pending"} {
		if !slices.Contains(codes, must) {
			t.Fatalf("the enumeration misses %s: %v", must, codes)
		}
	}
	api, err := os.ReadFile("../../docs/api.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range codes {
		if !strings.Contains(string(api), "`"+c+"`") {
			t.Errorf("docs/api.md does not list the problem code %s", c)
		}
		if !regexp.MustCompile(`\b` + c + `\b`).Match(docs.OpenAPI) {
			t.Errorf("docs/openapi.yaml does not list the problem code %s", c)
		}
	}
}

// TestWrongMethodIs405 sends a known path with a method it does not serve: 405
// method_not_allowed with Allow listing the methods it does serve; an unknown path stays 404.
func TestWrongMethodIs405(t *testing.T) {
	e := start(t, apitestOptions())
	r := e.do(e.admin(), "PUT", "/v1/connections", map[string]any{}, nil)
	wantProblem(t, r, 405, "method_not_allowed")
	if got := r.Header.Get("Allow"); got != "GET, HEAD, POST" {
		t.Errorf("Allow = %q, want GET, HEAD, POST", got)
	}
	r = e.do(e.admin(), "POST", "/v1/connections/some-id/messages/00000000-0000-4000-8000-000000000001", map[string]any{}, nil)
	wantProblem(t, r, 405, "method_not_allowed")
	if got := r.Header.Get("Allow"); got != "DELETE" {
		t.Errorf("Allow = %q, want DELETE", got)
	}
	wantProblem(t, e.do("", "DELETE", "/healthz", nil, nil), 405, "method_not_allowed")
	wantProblem(t, e.do(e.admin(), "GET", "/v1/no-such-route", nil, nil), 404, "not_found")
}

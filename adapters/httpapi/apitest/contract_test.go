package apitest

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestContractCatchesBreaches: the check names the method, the path, the operation, the status
// and the broken rule for each kind of breach, and accepts what the document allows.
func TestContractCatchesBreaches(t *testing.T) {
	c, err := LoadContract()
	if err != nil {
		t.Fatal(err)
	}
	jsonCT := http.Header{"Content-Type": {"application/json"}}
	problemCT := http.Header{"Content-Type": {"application/problem+json"}}
	problem := `{"type":"about:blank","title":"Not Found","status":404,"code":"not_found","detail":"no such route"}`
	for _, tc := range []struct {
		name, method, path string
		status             int
		header             http.Header
		body               string
		want               []string // substrings of the error; none: no error
	}{
		{"documented", "GET", "/healthz", 200, jsonCT, `{"status":"ok","build":{"version":"(devel)","modified":false,"go_version":"go1.26.8"}}`, nil},
		{"catch-all 404", "GET", "/v1/no-such-thing", 404, problemCT, problem, nil},
		{"operator console (HTML, not the API)", "GET", "/console/connections", 200, http.Header{"Content-Type": {"text/html"}}, `<p>ok</p>`, nil},
		{"console-like API path is still checked", "GET", "/v1/console/x", 200, jsonCT, `{}`,
			[]string{"GET /v1/console/x", "documents no such operation"}},
		{"undocumented route", "GET", "/v1/no-such-thing", 200, jsonCT, `{}`,
			[]string{"GET /v1/no-such-thing", "answered 200", "documents no such operation"}},
		{"undocumented status", "GET", "/healthz", 418, jsonCT, `{}`,
			[]string{"GET /healthz", "operation GET /healthz", "answered 418", "does not document", "documented: 200"}},
		{"wrong content type", "GET", "/healthz", 200, http.Header{"Content-Type": {"text/html"}}, `<p>ok</p>`,
			[]string{"GET /healthz", "Content-Type \"text/html\"", "application/json"}},
		{"schema", "GET", "/healthz", 200, jsonCT, `[1, 2]`,
			[]string{"GET /healthz", "answered 200 application/json", "body at /", `schema rule "type"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(tc.method, tc.path, nil)
			err := c.Check(req, tc.status, tc.header, []byte(tc.body))
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected breach: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("breach not caught")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

// TestContractRejectsInvalidDocument: a document a validating parser refuses (here an unquoted
// flow-mapping description with ", " inside braces, the defect of issue 11.9) does not load.
func TestContractRejectsInvalidDocument(t *testing.T) {
	doc := `openapi: 3.0.3
info: {title: t, version: "1"}
paths: {}
components:
  responses:
    Unauthorized: {description: unauthorized (missing, unknown or revoked key), content: {application/json: {schema: {type: object}}}}
`
	if _, err := loadContract([]byte(doc)); err == nil {
		t.Fatal("invalid document loaded")
	}
}

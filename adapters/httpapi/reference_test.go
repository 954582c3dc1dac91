package httpapi_test

import (
	"bytes"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/waqueue/waqueue/adapters/httpapi"
	"github.com/waqueue/waqueue/docs"
)

var (
	attrURL     = regexp.MustCompile(`(?i)\b(?:src|href|spec-url|action)\s*=\s*"([^"]*)"`)
	scriptTag   = regexp.MustCompile(`(?is)<script\b([^>]*)>(.*?)</script>`)
	externalURL = regexp.MustCompile(`(?i)(?:https?:)?//[a-z0-9.-]+`)
)

// TestDocsPage: GET /docs is the reference page: HTML under its own CSP, with no inline script
// and no external URL, whose every reference resolves (relative to /docs) to a route of this
// server answering the right content type: the vendored Redoc bundle and the OpenAPI document.
func TestDocsPage(t *testing.T) {
	e := start(t, apitestOptions())
	r := e.do("", "GET", "/docs", nil, nil)
	wantStatus(t, r, 200)
	if ct := r.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("/docs Content-Type %q", ct)
	}
	if csp := r.Header.Get("Content-Security-Policy"); csp != httpapi.ReferenceCSP {
		t.Errorf("/docs CSP %q, want %q", csp, httpapi.ReferenceCSP)
	}
	for _, d := range []string{"default-src 'none'", "script-src 'self';", "connect-src 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(httpapi.ReferenceCSP, d) {
			t.Errorf("CSP lacks %q", d)
		}
	}
	for _, d := range strings.Split(httpapi.ReferenceCSP, ";") {
		if f := strings.Fields(d); len(f) > 0 && (f[0] == "script-src" || f[0] == "default-src") &&
			(strings.Contains(d, "unsafe-") || strings.Contains(d, "*") || strings.Contains(d, ":")) {
			t.Errorf("CSP %q allows inline, eval or other origins' scripts", d)
		}
	}
	page := string(r.Body)
	if m := externalURL.FindString(page); m != "" {
		t.Errorf("/docs names an external URL %q", m)
	}
	for _, m := range scriptTag.FindAllStringSubmatch(page, -1) {
		if strings.TrimSpace(m[2]) != "" || !strings.Contains(m[1], "src=") {
			t.Errorf("inline script in /docs: %s", m[0])
		}
	}

	base, _ := url.Parse("http://waqueue.test/docs")
	want := map[string]string{
		"/docs/redoc.standalone.js": "text/javascript; charset=utf-8",
		"/v1/openapi.yaml":          "application/yaml",
	}
	seen := map[string]bool{}
	for _, m := range attrURL.FindAllStringSubmatch(page, -1) {
		ref, err := url.Parse(m[1])
		if err != nil {
			t.Errorf("bad URL %q: %v", m[1], err)
			continue
		}
		if ref.Scheme == "data" {
			continue
		}
		u := base.ResolveReference(ref)
		if u.Host != base.Host || strings.HasPrefix(m[1], "/") {
			t.Errorf("%q: want a relative same-origin URL (the page may be served under a prefix)", m[1])
			continue
		}
		ct, ok := want[u.Path]
		if !ok {
			t.Errorf("/docs references %s, which is neither the bundle nor the OpenAPI document", u.Path)
			continue
		}
		seen[u.Path] = true
		res := e.do("", "GET", u.Path, nil, nil)
		wantStatus(t, res, 200)
		if got := res.Header.Get("Content-Type"); got != ct {
			t.Errorf("%s Content-Type %q, want %q", u.Path, got, ct)
		}
		if res.Header.Get("X-Content-Type-Options") != "nosniff" && u.Path != "/v1/openapi.yaml" {
			t.Errorf("%s without X-Content-Type-Options: nosniff", u.Path)
		}
		switch u.Path {
		case "/docs/redoc.standalone.js":
			if !bytes.Equal(res.Body, docs.RedocJS) || len(res.Body) < 1<<20 {
				t.Errorf("bundle: %d bytes, not the vendored Redoc", len(res.Body))
			}
		case "/v1/openapi.yaml":
			if !bytes.Equal(res.Body, docs.OpenAPI) {
				t.Error("the page's spec-url does not serve the embedded OpenAPI document")
			}
		}
	}
	for p := range want {
		if !seen[p] {
			t.Errorf("/docs does not reference %s", p)
		}
	}
}

package httpapi

import (
	"net/http"

	"github.com/waqueue/waqueue/docs"
)

// ReferenceCSP is the Content-Security-Policy of the API reference page (GET /docs). Only
// same-origin scripts, data and workers; no inline script, no eval. Two allowances Redoc needs:
// 'unsafe-inline' styles (its styled-components insert <style> elements at run time) and blob:
// workers (its search index runs in a worker built from a blob). img-src and font-src allow
// data: for the icons inlined in the bundle.
const ReferenceCSP = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; " +
	"img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// referencePage serves the API reference page: Redoc rendering /v1/openapi.yaml.
func (s *server) referencePage(w http.ResponseWriter, _ *http.Request) error {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", ReferenceCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(docs.ReferencePage)
	return nil
}

// redocJS serves the vendored Redoc bundle (docs/vendor/redoc).
func (s *server) redocJS(w http.ResponseWriter, _ *http.Request) error {
	h := w.Header()
	h.Set("Content-Type", "text/javascript; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "public, max-age=86400")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(docs.RedocJS)
	return nil
}

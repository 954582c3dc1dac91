package httpapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// MetricsHandler serves reg in the Prometheus exposition format at GET /metrics and answers
// 404 not_found on every other path. If token is not empty, a request must carry
// "Authorization: Bearer <token>" (compared in constant time), or it is answered 401
// unauthorized. It is not part of the API's handler: `waqueue serve` runs it on its own
// listener (--metrics-listen, loopback by default), because the series describe every tenant
// of the node.
func MetricsHandler(reg *prometheus.Registry, token string) http.Handler {
	// A collector that fails (the read-model gauges, read from the database when scraped) leaves
	// its series out of that scrape; the others are still served, instead of a 500 for all.
	prom := promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
	want := sha256.Sum256([]byte(token))
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if token != "" {
			scheme, cred, _ := strings.Cut(r.Header.Get("Authorization"), " ")
			got := sha256.Sum256([]byte(strings.TrimSpace(cred)))
			if !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="waqueue metrics"`)
				writeProblem(w, r, &Problem{Status: http.StatusUnauthorized, Code: CodeUnauthorized, Detail: "the metrics token is required (Authorization: Bearer …)"})
				return
			}
		}
		prom.ServeHTTP(w, r)
	}))
	mux.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, r, &Problem{Status: http.StatusNotFound, Code: CodeNotFound, Detail: "no such route"})
	}))
	return mux
}

package httpapi_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/waqueue/waqueue/adapters/httpapi"
)

// TestMetricsHandlerToken: with a token, /metrics needs it as a bearer credential (401 without
// or with another); without one it is open (its listener is loopback by default); other paths
// are 404.
func TestMetricsHandlerToken(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "waqueue_test_total", Help: "x"})
	reg.MustRegister(c)
	c.Inc()
	get := func(h http.Handler, path, auth string) (int, string) {
		srv := httptest.NewServer(h)
		defer srv.Close()
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	locked := httpapi.MetricsHandler(reg, "s3cret-token")
	for _, auth := range []string{"", "Bearer wrong", "Basic czNjcmV0LXRva2Vu", "Bearer s3cret-token-and-more", "Bearer "} {
		if code, body := get(locked, "/metrics", auth); code != 401 || strings.Contains(body, "waqueue_test_total") {
			t.Errorf("Authorization %q: %d %s, want 401 without metrics", auth, code, body)
		}
	}
	if code, body := get(locked, "/metrics", "Bearer s3cret-token"); code != 200 || !strings.Contains(body, "waqueue_test_total 1") {
		t.Errorf("right token: %d %s", code, body)
	}
	open := httpapi.MetricsHandler(reg, "")
	if code, body := get(open, "/metrics", ""); code != 200 || !strings.Contains(body, "waqueue_test_total 1") {
		t.Errorf("no token configured: %d %s", code, body)
	}
	if code, _ := get(open, "/v1/connections", ""); code != 404 {
		t.Errorf("other path on the metrics handler: %d, want 404", code)
	}
}

package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/waqueue/waqueue/cmd/waqueue/internal/config"
	"github.com/waqueue/waqueue/internal/testwait"
)

// lockedBuffer is a strings.Builder safe for a writer and a reader.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// TestServeMetricsOnTheirOwnListener runs `serve` as configured from flags: the API's port
// answers 404 on /metrics, the metrics listener serves them, behind the token when one is set.
func TestServeMetricsOnTheirOwnListener(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testwait.AtLeast(2*time.Minute))
	defer cancel()
	dir := t.TempDir()
	cfg := &config.Config{}
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	cfg.Bind(fs)
	if err := fs.Parse([]string{"--data-dir", dir, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
		"--audit-key", dir + "/audit.pem"}); err != nil {
		t.Fatal(err)
	}
	cfg.MetricsToken = "m3trics"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	out := &lockedBuffer{}
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- serve(sctx, cfg, slog.New(slog.DiscardHandler), out) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()

	apiRe := regexp.MustCompile(`serving (http://[0-9.:]+)`)
	metricsRe := regexp.MustCompile(`metrics on (http://[0-9.:]+)/metrics`)
	var api, metrics string
	for api == "" || metrics == "" { // wait for both listeners to be announced
		if m := apiRe.FindStringSubmatch(out.String()); m != nil {
			api = m[1]
		}
		if m := metricsRe.FindStringSubmatch(out.String()); m != nil {
			metrics = m[1]
		}
		select {
		case err := <-done:
			t.Fatalf("serve returned early: %v\n%s", err, out.String())
		case <-ctx.Done():
			t.Fatalf("listeners never announced:\n%s", out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	if api == metrics {
		t.Fatalf("metrics share the API's address %s", api)
	}
	// The first start creates the admin key and prints it after the start-up lines (issue 14.8).
	for !strings.Contains(out.String(), "admin API key") {
		select {
		case err := <-done:
			t.Fatalf("serve returned early: %v\n%s", err, out.String())
		case <-ctx.Done():
			t.Fatalf("admin key never printed:\n%s", out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	if o := out.String(); strings.Index(o, "admin API key") < strings.Index(o, "audit checkpoints signed") ||
		strings.Index(o, "admin API key") < strings.Index(o, "serving http://") {
		t.Errorf("the admin key is not printed after the start-up lines:\n%s", o)
	}
	get := func(url, token string) (int, string) {
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	if code, body := get(api+"/metrics", ""); code != http.StatusNotFound {
		t.Errorf("API port /metrics: %d %s, want 404", code, body)
	}
	if code, _ := get(api+"/healthz", ""); code != http.StatusOK {
		t.Errorf("API port /healthz: %d", code)
	}
	if code, _ := get(metrics+"/metrics", ""); code != http.StatusUnauthorized {
		t.Errorf("metrics without the token: %d, want 401", code)
	}
	// The read-model gauges are read when scraped; on a busy machine a scrape may find the
	// read-model database busy past the collector's bound (that gauge is then left out of the
	// scrape, the rest is served): scrape until it is there.
	for {
		code, body := get(metrics+"/metrics", "m3trics")
		if code == http.StatusOK && strings.Contains(body, "waqueue_queue_depth") {
			break
		}
		if code != http.StatusOK && code != http.StatusInternalServerError || ctx.Err() != nil {
			t.Fatalf("metrics with the token: %d %s", code, body)
		}
		t.Logf("metrics with the token: %d, scraping again: %.300s", code, body)
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

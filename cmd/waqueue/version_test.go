package main

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"testing"

	"github.com/waqueue/waqueue/internal/buildinfo"
)

func TestVersionCommand(t *testing.T) {
	out := mustCLI(t, nil, "", "version")
	if !strings.HasPrefix(out, "waqueue ") || !strings.HasSuffix(out, " "+runtime.Version()+"\n") {
		t.Errorf("waqueue version printed %q", out)
	}
	var in buildinfo.Info
	if err := json.Unmarshal([]byte(mustCLI(t, nil, "", "version", "--json")), &in); err != nil {
		t.Fatal(err)
	}
	if in != buildinfo.Read() {
		t.Errorf("version --json = %+v, want %+v", in, buildinfo.Read())
	}
}

// TestHealthcheckCommand: `waqueue healthcheck` succeeds against a server that answers
// /healthz 200 on the --listen address (an unspecified host reached on loopback), and fails
// when it answers otherwise or nothing listens.
func TestHealthcheckCommand(t *testing.T) {
	srv, _ := startServer(t)
	u, _ := url.Parse(srv.URL)
	_, port, _ := net.SplitHostPort(u.Host)
	for _, listen := range []string{u.Host, "0.0.0.0:" + port, ":" + port} {
		out, errOut, err := cli(t, nil, "", "", "healthcheck", "--listen", listen)
		if err != nil || !strings.Contains(out, `"status":"ok"`) {
			t.Errorf("healthcheck --listen %s: %v\n%s%s", listen, err, out, errOut)
		}
	}
	t.Setenv("WAQUEUE_LISTEN", u.Host)
	if _, _, err := cli(t, nil, "", "", "healthcheck"); err != nil {
		t.Errorf("healthcheck with WAQUEUE_LISTEN=%s: %v", u.Host, err)
	}

	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	defer down.Close()
	if _, _, err := cli(t, nil, "", "", "healthcheck", "--listen", strings.TrimPrefix(down.URL, "http://")); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("healthcheck against a 503: err %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	if _, _, err := cli(t, nil, "", "", "healthcheck", "--listen", closed); err == nil {
		t.Errorf("healthcheck against a closed port %s succeeded", closed)
	}
}

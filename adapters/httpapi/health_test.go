package httpapi_test

import (
	"runtime"
	"testing"
)

// TestHealthzNamesTheBuild: GET /healthz answers the build's version, revision and Go version
// (internal/buildinfo) without an API key.
func TestHealthzNamesTheBuild(t *testing.T) {
	e := start(t, apitestOptions())
	r := e.do("", "GET", "/healthz", nil, nil)
	wantStatus(t, r, 200)
	var body struct {
		Status string `json:"status"`
		Build  *struct {
			Version   string `json:"version"`
			Revision  string `json:"revision"`
			Modified  *bool  `json:"modified"`
			GoVersion string `json:"go_version"`
		} `json:"build"`
	}
	if err := r.JSON(&body); err != nil {
		t.Fatal(err)
	}
	if body.Status != "ok" || body.Build == nil {
		t.Fatalf("healthz body %s", r.Body)
	}
	if body.Build.GoVersion != runtime.Version() || body.Build.Version == "" || body.Build.Modified == nil {
		t.Errorf("healthz build %+v; want go_version %s, a version and the modified flag", *body.Build, runtime.Version())
	}
}

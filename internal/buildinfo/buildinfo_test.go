package buildinfo_test

import (
	"fmt"
	"runtime/debug"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/waqueue/waqueue/internal/buildinfo"
)

func stamped() *debug.BuildInfo {
	return &debug.BuildInfo{
		GoVersion: "go1.26.8",
		Main:      debug.Module{Path: "github.com/waqueue/waqueue", Version: "v1.2.0"},
		Settings: []debug.BuildSetting{
			{Key: "CGO_ENABLED", Value: "0"},
			{Key: "vcs", Value: "git"},
			{Key: "vcs.revision", Value: "0123456789abcdef0123456789abcdef01234567"},
			{Key: "vcs.time", Value: "2026-12-01T10:00:00Z"},
			{Key: "vcs.modified", Value: "true"},
		},
	}
}

func TestFromBuildInfo(t *testing.T) {
	in := buildinfo.FromBuildInfo(stamped())
	want := buildinfo.Info{Version: "v1.2.0", Revision: "0123456789abcdef0123456789abcdef01234567",
		Time: "2026-12-01T10:00:00Z", Modified: true, GoVersion: "go1.26.8"}
	if in != want {
		t.Fatalf("got %+v, want %+v", in, want)
	}
	if got := in.String(); got != "waqueue v1.2.0 (revision 0123456789abcdef0123456789abcdef01234567, modified) go1.26.8" {
		t.Errorf("String() = %q", got)
	}
	bare := buildinfo.FromBuildInfo(&debug.BuildInfo{GoVersion: "go1.26.8"})
	if bare.Version != "(devel)" || bare.Revision != "" || bare.Modified {
		t.Errorf("unstamped build: %+v", bare)
	}
	if got := bare.String(); got != "waqueue (devel) go1.26.8" {
		t.Errorf("unstamped String() = %q", got)
	}
}

func TestCollector(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(buildinfo.Collector(buildinfo.FromBuildInfo(stamped())))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) != 1 || mfs[0].GetName() != "waqueue_build_info" || len(mfs[0].GetMetric()) != 1 {
		t.Fatalf("gathered %v", mfs)
	}
	m := mfs[0].GetMetric()[0]
	labels := map[string]string{}
	for _, l := range m.GetLabel() {
		labels[l.GetName()] = l.GetValue()
	}
	want := map[string]string{"version": "v1.2.0", "revision": "0123456789abcdef0123456789abcdef01234567+modified", "goversion": "go1.26.8"}
	if fmt.Sprint(labels) != fmt.Sprint(want) || m.GetGauge().GetValue() != 1 {
		t.Errorf("waqueue_build_info: labels %v value %v; want %v 1", labels, m.GetGauge().GetValue(), want)
	}
	// The running binary's own info registers too, once.
	reg2 := prometheus.NewRegistry()
	if err := buildinfo.Register(reg2); err != nil {
		t.Fatal(err)
	}
	if err := buildinfo.Register(reg2); err == nil {
		t.Error("a second Register on the same registry succeeded")
	}
}

// Package buildinfo reports which waqueue this is: the module version, the VCS revision and
// whether the tree was modified, and the Go version, as the Go toolchain stamped them into the
// binary (runtime/debug.ReadBuildInfo). `waqueue version`, GET /healthz and the
// waqueue_build_info metric all show this one value.
package buildinfo

import (
	"fmt"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// Info is the build's identity. Fields the toolchain did not stamp are empty: a test binary
// or `go run` carries no VCS revision, and a build outside a module carries no version.
type Info struct {
	// Version is the main module's version: a tag such as "v1.2.0" when built from a module
	// download (go install …@v1.2.0), a pseudo-version or "(devel)" when built in the source tree.
	Version string `json:"version"`
	// Revision is the VCS commit the binary was built from (vcs.revision).
	Revision string `json:"revision,omitempty"`
	// Time is the commit time, RFC 3339 (vcs.time).
	Time string `json:"time,omitempty"`
	// Modified reports uncommitted changes in the tree at build time (vcs.modified).
	Modified bool `json:"modified"`
	// GoVersion is the toolchain that built the binary, e.g. "go1.26.8".
	GoVersion string `json:"go_version"`
}

// Read returns the running binary's Info.
func Read() Info {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return Info{Version: "unknown", GoVersion: "unknown"}
	}
	return FromBuildInfo(bi)
}

// FromBuildInfo extracts Info from bi.
func FromBuildInfo(bi *debug.BuildInfo) Info {
	in := Info{Version: bi.Main.Version, GoVersion: bi.GoVersion}
	if in.Version == "" {
		in.Version = "(devel)"
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			in.Revision = s.Value
		case "vcs.time":
			in.Time = s.Value
		case "vcs.modified":
			in.Modified = s.Value == "true"
		}
	}
	return in
}

// String is the one line `waqueue version` prints, e.g.
// "waqueue v1.2.0 (revision 0123abcd…, modified) go1.26.8".
func (in Info) String() string {
	s := "waqueue " + in.Version
	if in.Revision != "" {
		s += " (revision " + in.Revision
		if in.Modified {
			s += ", modified"
		}
		s += ")"
	}
	return s + " " + in.GoVersion
}

// Collector returns the gauge waqueue_build_info{version,revision,goversion} 1. The revision
// label carries a "+modified" suffix when the tree was modified at build time.
func Collector(in Info) prometheus.Collector {
	rev := in.Revision
	if in.Modified {
		rev += "+modified"
	}
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "waqueue_build_info",
		Help:        "Which waqueue build is running (always 1); the labels name it.",
		ConstLabels: prometheus.Labels{"version": in.Version, "revision": rev, "goversion": in.GoVersion},
	}, func() float64 { return 1 })
}

// Register registers Collector(Read()) on reg.
func Register(reg prometheus.Registerer) error {
	if err := reg.Register(Collector(Read())); err != nil {
		return fmt.Errorf("buildinfo: register waqueue_build_info: %w", err)
	}
	return nil
}

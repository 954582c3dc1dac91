package bench

import (
	"bytes"
	"context"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/waqueue/waqueue/adapters/pgcluster/pgtest"
	"github.com/waqueue/waqueue/internal/testwait"
)

func TestMain(m *testing.M) {
	if stageProcess() {
		return
	}
	pgtest.Main(m)
}

var benchLine = regexp.MustCompile(`^BENCH (store/(postgres|sqlite)/(append-batch|append-single|catch-up)) events_per_s=(\d+) baseline=(copy|insert|insert-tx|select) baseline_per_s=(\d+) ratio=(\d+\.\d\d) rss_mib=(\d+\.\d)$`)

// TestStoreTiny runs the store benchmark at tiny sizes so that it cannot rot. It checks the
// shape of the output, never the speed.
func TestStoreTiny(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testwait.AtLeast(3*time.Minute))
	defer cancel()
	var out bytes.Buffer
	cfg := Config{
		DatabaseURL:   pgtest.URL(t),
		SQLitePath:    filepath.Join(t.TempDir(), "bench.db"),
		Dir:           t.TempDir(),
		CatchUpEvents: 1500,
		BatchEvents:   200,
		BatchSize:     100,
		SingleEvents:  40,
		Writers:       4,
	}
	if err := Store(ctx, cfg, &out); err != nil {
		t.Fatalf("Store: %v\noutput so far:\n%s", err, out.String())
	}
	seen := map[string]bool{}
	for _, line := range bytes.Split(bytes.TrimSpace(out.Bytes()), []byte("\n")) {
		m := benchLine.FindSubmatch(line)
		if m == nil {
			t.Fatalf("line %q does not have the BENCH format", line)
		}
		name := string(m[1])
		if seen[name] {
			t.Fatalf("figure %s printed twice", name)
		}
		seen[name] = true
		for _, i := range []int{4, 6} {
			if v, _ := strconv.Atoi(string(m[i])); v <= 0 {
				t.Fatalf("line %q: rate %s is not positive", line, m[i])
			}
		}
		if rss, _ := strconv.ParseFloat(string(m[8]), 64); rss <= 0 {
			t.Fatalf("line %q: rss_mib %s is not positive", line, m[8])
		}
	}
	for _, a := range []string{"postgres", "sqlite"} {
		for _, f := range []string{"append-batch", "append-single", "catch-up"} {
			if name := "store/" + a + "/" + f; !seen[name] {
				t.Errorf("figure %s missing from the output:\n%s", name, out.String())
			}
		}
	}
}

func TestConfigValidate(t *testing.T) {
	cfg := Config{Adapters: []string{"postgres", "oracle"}, BatchEvents: 10, BatchSize: 100}
	err := cfg.Validate()
	if err == nil {
		t.Fatal("Validate accepted an unknown adapter and a batch total below one batch")
	}
	for _, want := range []string{`"oracle"`, "BatchEvents 10"} {
		if !bytes.Contains([]byte(err.Error()), []byte(want)) {
			t.Errorf("Validate error %q does not mention %s", err, want)
		}
	}
	if err := (Config{Adapters: []string{"sqlite"}}).Validate(); err != nil {
		t.Errorf("Validate rejected a valid config: %v", err)
	}
}

func TestPeakRSS(t *testing.T) {
	if got := peakRSSMiB(); got <= 0 {
		t.Fatalf("peakRSSMiB() = %v, want > 0 on Linux", got)
	}
}

// TestStartupSecondsSaysWhenNotAllStarted: a start-up that ran out of StartupLimit before every
// active connection dispatched prints -1, not the limit's elapsed time (make bench printed
// startup_s=-0.00 for scale/sqlite: a -1 ns duration in seconds).
func TestStartupSecondsSaysWhenNotAllStarted(t *testing.T) {
	for _, c := range []struct {
		d               time.Duration
		started, active int
		want            float64
	}{
		{60 * time.Second, 4309, 10000, -1},
		{0, 0, 1, -1},
		{9500 * time.Millisecond, 10000, 10000, 9.5},
		{0, 0, 0, 0},
	} {
		if got := startupSeconds(c.d, c.started, c.active); got != c.want {
			t.Errorf("startupSeconds(%s, %d, %d) = %v, want %v", c.d, c.started, c.active, got, c.want)
		}
	}
}

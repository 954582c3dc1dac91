// Package bench holds the `waqueue bench` measurements. Each prints one line per figure:
//
//	BENCH <name> events_per_s=<n> baseline=<what> baseline_per_s=<n> ratio=<events/baseline> rss_mib=<peak>
//
// A baseline is measured in the same run, on the same machine and database, doing the plain
// database work the measured operation cannot avoid, so the ratio shows the overhead of the
// code under test rather than the speed of the machine. rss_mib is the process's peak
// resident set size so far (VmHWM); `bench all` gives each stage a process of its own (All).
package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"
)

// result is one measured figure with its baseline.
type result struct {
	name        string // for example "store/postgres/append-batch"
	events      int
	elapsed     time.Duration
	baseline    string // for example "copy"
	baseEvents  int
	baseElapsed time.Duration
}

func perSecond(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// print writes r as a BENCH line.
func (r result) print(w io.Writer) error {
	rate := perSecond(r.events, r.elapsed)
	base := perSecond(r.baseEvents, r.baseElapsed)
	ratio := 0.0
	if base > 0 {
		ratio = rate / base
	}
	_, err := fmt.Fprintf(w, "BENCH %s events_per_s=%.0f baseline=%s baseline_per_s=%.0f ratio=%.2f rss_mib=%.1f\n",
		r.name, rate, r.baseline, base, ratio, peakRSSMiB())
	return err
}

// peakRSSMiB returns the process's peak resident set size (VmHWM) in MiB, or 0 if
// /proc/self/status cannot be read (not Linux).
func peakRSSMiB() float64 { return procStatusMiB("VmHWM:") }

// procStatusMiB returns the /proc/self/status figure key (a size in kB, for example "VmRSS:")
// in MiB, or 0 if it cannot be read.
func procStatusMiB(key string) float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.HasPrefix(line, []byte(key)) {
			continue
		}
		f := bytes.Fields(line[len(key):])
		if len(f) == 0 {
			return 0
		}
		kib, err := strconv.ParseFloat(string(f[0]), 64)
		if err != nil {
			return 0
		}
		return kib / 1024
	}
	return 0
}

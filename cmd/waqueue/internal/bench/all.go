package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"
)

// Doc markers: `bench all` replaces what lies between them in the results document.
const (
	DocBegin = "<!-- bench:begin -->"
	DocEnd   = "<!-- bench:end -->"
)

// AllConfig configures `waqueue bench all`.
type AllConfig struct {
	Env      EnvConfig
	Store    Config
	Clear    ClearConfig
	Dispatch DispatchConfig
	API      APIConfig
	Import   ImportConfig
	Scale    ScaleConfig
	// DocPath is the Markdown file whose marked section receives the results table. Empty
	// means no document is written.
	DocPath string
	// Command is the command line recorded in the document.
	Command string
	// Now is the clock of the date in the document. Default time.Now.
	Now func() time.Time
}

// All runs the store, clear (with catch-up), dispatch, api, import and scale benchmarks, printing their
// BENCH lines to w, then, if cfg.DocPath is set, writes the results table into its marked
// section. It stops at the first benchmark that fails.
func All(ctx context.Context, cfg AllConfig, w io.Writer) (err error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	started := cfg.Now()
	loadBefore := loadAvg()
	rec := &Recorder{W: w}
	cfg.Store.DatabaseURL, cfg.Store.Dir, cfg.Store.Adapters = cfg.Env.DatabaseURL, cfg.Env.Dir, cfg.Env.Adapters
	if err := Store(ctx, cfg.Store, rec); err != nil {
		return err
	}
	env, err := NewEnv(cfg.Env)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := env.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	if err := Clear(ctx, env, cfg.Clear, rec); err != nil {
		return err
	}
	if err := Dispatch(ctx, env, cfg.Dispatch, rec); err != nil {
		return err
	}
	if err := API(ctx, env, cfg.API, rec); err != nil {
		return err
	}
	if err := Import(ctx, env, cfg.Import, rec); err != nil {
		return err
	}
	if err := Scale(ctx, env, cfg.Scale, rec); err != nil {
		return err
	}
	if cfg.DocPath == "" {
		return nil
	}
	m := Machine{
		CPU: cpuModel(), Cores: runtime.NumCPU(), Go: runtime.Version(), PostgreSQL: env.PostgresVersion(),
		Date: started.UTC(), Duration: cfg.Now().Sub(started), LoadBefore: loadBefore, LoadAfter: loadAvg(),
		Command: cfg.Command,
	}
	return WriteDoc(cfg.DocPath, RenderTable(m, rec.Lines()))
}

// Recorder passes writes through to W and keeps the BENCH lines written. It is safe for
// concurrent use.
type Recorder struct {
	W       io.Writer
	mu      sync.Mutex
	partial []byte
	lines   []Line
}

func (r *Recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.partial = append(r.partial, p...)
	for {
		i := bytes.IndexByte(r.partial, '\n')
		if i < 0 {
			break
		}
		if l, ok := ParseLine(string(r.partial[:i])); ok {
			r.lines = append(r.lines, l)
		}
		r.partial = r.partial[i+1:]
	}
	return r.W.Write(p)
}

// Lines returns the BENCH lines recorded so far.
func (r *Recorder) Lines() []Line {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Line(nil), r.lines...)
}

// ParseLine parses a BENCH line; ok is false for any other line.
func ParseLine(s string) (l Line, ok bool) {
	f := strings.Fields(s)
	if len(f) < 2 || f[0] != "BENCH" {
		return l, false
	}
	l.Name = f[1]
	for _, kv := range f[2:] {
		k, v, found := strings.Cut(kv, "=")
		if !found {
			return Line{}, false
		}
		l.Fields = append(l.Fields, [2]string{k, v})
	}
	return l, true
}

// Machine describes where and how a run happened.
type Machine struct {
	CPU                   string
	Cores                 int
	Go, PostgreSQL        string
	Date                  time.Time
	Duration              time.Duration
	LoadBefore, LoadAfter string
	Command               string
}

// RenderTable renders the results section: the machine and a table of every figure with its
// baseline and ratio.
func RenderTable(m Machine, lines []Line) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Run of %s (%s), `%s`.\n\n", m.Date.Format("2006-01-02 15:04 MST"), m.Duration.Round(time.Second), m.Command)
	pg := m.PostgreSQL
	if pg == "" {
		pg = "not measured"
	}
	fmt.Fprintf(&b, "- Machine: %s, %d cores; %s; PostgreSQL %s (throwaway cluster, fsync=on, synchronous_commit=on unless --db); SQLite via modernc.org/sqlite (WAL).\n", m.CPU, m.Cores, m.Go, pg)
	fmt.Fprintf(&b, "- Load average (1/5/15 min) before: %s; after: %s (the machine is shared).\n\n", m.LoadBefore, m.LoadAfter)
	b.WriteString("| Figure | Measured | Baseline | Baseline figure | Ratio | Peak RSS MiB |\n")
	b.WriteString("|---|---|---|---|---|---|\n")
	for _, l := range lines {
		var measured, basefig []string
		for _, f := range l.Fields {
			switch {
			case f[0] == "baseline" || f[0] == "ratio" || f[0] == "rss_mib":
			case strings.HasPrefix(f[0], "baseline_"):
				basefig = append(basefig, f[0]+"="+f[1])
			default:
				measured = append(measured, f[0]+"="+f[1])
			}
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", l.Name, strings.Join(measured, " "), l.Field("baseline"),
			strings.Join(basefig, " "), l.Field("ratio"), l.Field("rss_mib"))
	}
	return b.String()
}

// WriteDoc replaces the section between DocBegin and DocEnd in the file at path with
// section (appending the markers and section if the file has none; creating the file if
// it does not exist).
func WriteDoc(path, section string) error {
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("bench: read %s: %w", path, err)
	}
	block := DocBegin + "\n" + section + DocEnd
	s := string(old)
	i, j := strings.Index(s, DocBegin), strings.Index(s, DocEnd)
	switch {
	case i >= 0 && j > i:
		s = s[:i] + block + s[j+len(DocEnd):]
	case i >= 0 || j >= 0:
		return fmt.Errorf("bench: %s has a broken %s … %s section", path, DocBegin, DocEnd)
	default:
		if s != "" && !strings.HasSuffix(s, "\n") {
			s += "\n"
		}
		s += "\n" + block + "\n"
	}
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		return fmt.Errorf("bench: write %s: %w", path, err)
	}
	return nil
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// ReadLines returns the BENCH lines of r (other lines are skipped), for a results document
// assembled from the output of separate runs.
func ReadLines(r io.Reader) ([]Line, error) {
	var out []Line
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if l, ok := ParseLine(sc.Text()); ok {
			out = append(out, l)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("bench: read BENCH lines: %w", err)
	}
	return out, nil
}

// ThisMachine describes the machine now: CPU, cores, Go version, load average and date. The
// PostgreSQL version is left empty (the caller knows which server was measured).
func ThisMachine(now time.Time) Machine {
	return Machine{CPU: cpuModel(), Cores: runtime.NumCPU(), Go: runtime.Version(), Date: now.UTC(), LoadBefore: loadAvg(), LoadAfter: loadAvg()}
}

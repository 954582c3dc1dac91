package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"
)

// Doc markers: `bench all` replaces what lies between them in the results document.
const (
	DocBegin = "<!-- bench:begin -->"
	DocEnd   = "<!-- bench:end -->"
)

// Stages of `waqueue bench all`, in the order they run.
const (
	StageStore    = "store"
	StageClear    = "clear"
	StageDispatch = "dispatch"
	StageAPI      = "api"
	StageImport   = "import"
	StageScale    = "scale"
)

// AllStages lists every stage of `waqueue bench all` in its order.
var AllStages = []string{StageStore, StageClear, StageDispatch, StageAPI, StageImport, StageScale}

// envLinePrefix starts the line a stage run in a child process prints for its parent: the
// PostgreSQL version it measured (the only thing of its environment the results document names).
const envLinePrefix = "BENCH-ENV "

// AllConfig configures `waqueue bench all`.
type AllConfig struct {
	Env      EnvConfig
	Store    Config
	Clear    ClearConfig
	Dispatch DispatchConfig
	API      APIConfig
	Import   ImportConfig
	Scale    ScaleConfig
	// Stages are the stages to run (AllStages when empty), always in AllStages' order.
	Stages []string
	// Spawn, when set, runs each stage in a child process instead of this one: it returns the
	// command for a stage (the same benchmark with only that stage and no document), whose
	// standard output carries the stage's BENCH lines. A stage in its own process starts from
	// a fresh heap and its own peak RSS, so rss_mib is that stage's alone and no stage's memory
	// (a million-event clear's, say) shows in a later one's figures.
	Spawn func(ctx context.Context, stage string) *exec.Cmd
	// DocPath is the Markdown file whose marked section receives the results table. Empty
	// means no document is written.
	DocPath string
	// Command is the command line recorded in the document.
	Command string
	// Now is the clock of the date in the document. Default time.Now.
	Now func() time.Time
}

// stages returns the stages to run, checked, in AllStages' order.
func (cfg AllConfig) stages() ([]string, error) {
	if len(cfg.Stages) == 0 {
		return AllStages, nil
	}
	want := map[string]bool{}
	for _, s := range cfg.Stages {
		if !slices.Contains(AllStages, s) {
			return nil, fmt.Errorf("bench: unknown stage %q (want one of %s)", s, strings.Join(AllStages, ", "))
		}
		want[s] = true
	}
	var out []string
	for _, s := range AllStages {
		if want[s] {
			out = append(out, s)
		}
	}
	return out, nil
}

// All runs the store, clear (with catch-up), dispatch, api, import and scale benchmarks (or
// cfg.Stages of them), printing their BENCH lines to w, then, if cfg.DocPath is set, writes
// the results table into its marked section. It stops at the first benchmark that fails.
// With cfg.Spawn each stage runs in a child process; otherwise all run in this process, each
// after the previous one's garbage was returned to the OS and the peak RSS reset.
func All(ctx context.Context, cfg AllConfig, w io.Writer) (err error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	stages, err := cfg.stages()
	if err != nil {
		return err
	}
	started := cfg.Now()
	loadBefore := loadAvg()
	rec := &Recorder{W: w}
	var pgVersion string
	if cfg.Spawn != nil {
		for _, stage := range stages {
			if err := runChild(ctx, cfg.Spawn(ctx, stage), stage, rec); err != nil {
				return err
			}
		}
		pgVersion = rec.PostgresVersion()
	} else {
		if pgVersion, err = allInProcess(ctx, cfg, stages, rec); err != nil {
			return err
		}
		if len(cfg.Stages) > 0 && pgVersion != "" {
			// A stage run for a parent (see Spawn) tells it the server it measured.
			fmt.Fprintf(rec, "%spostgres=%s\n", envLinePrefix, pgVersion)
		}
	}
	if cfg.DocPath == "" {
		return nil
	}
	m := Machine{
		CPU: cpuModel(), Cores: runtime.NumCPU(), Go: runtime.Version(), PostgreSQL: pgVersion,
		Date: started.UTC(), Duration: cfg.Now().Sub(started), LoadBefore: loadBefore, LoadAfter: loadAvg(),
		Command: cfg.Command,
	}
	return WriteDoc(cfg.DocPath, RenderTable(m, rec.Lines()))
}

// runChild runs one stage's child process, its standard output into rec (its standard error
// passed through), and names the stage if it fails.
func runChild(ctx context.Context, cmd *exec.Cmd, stage string, rec *Recorder) error {
	cmd.Stdout = rec
	if cmd.Stderr == nil {
		cmd.Stderr = os.Stderr
	}
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("bench: stage %s (%s): %w", stage, cmd.Path, err)
	}
	return nil
}

// allInProcess runs stages in this process and returns the PostgreSQL version measured ("" if
// none was).
func allInProcess(ctx context.Context, cfg AllConfig, stages []string, rec *Recorder) (pgVersion string, err error) {
	env, err := NewEnv(cfg.Env)
	if err != nil {
		return "", err
	}
	defer func() {
		if cerr := env.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	for _, stage := range stages {
		// What an earlier stage left for the collector is not this stage's memory.
		runtime.GC()
		debug.FreeOSMemory()
		resetPeakRSS()
		switch stage {
		case StageStore:
			store := cfg.Store
			store.DatabaseURL, store.Dir, store.Adapters = cfg.Env.DatabaseURL, cfg.Env.Dir, cfg.Env.Adapters
			err = Store(ctx, store, rec)
		case StageClear:
			err = Clear(ctx, env, cfg.Clear, rec)
		case StageDispatch:
			err = Dispatch(ctx, env, cfg.Dispatch, rec)
		case StageAPI:
			err = API(ctx, env, cfg.API, rec)
		case StageImport:
			err = Import(ctx, env, cfg.Import, rec)
		case StageScale:
			err = Scale(ctx, env, cfg.Scale, rec)
		}
		if err != nil {
			return "", err
		}
	}
	return env.PostgresVersion(), nil
}

// Recorder passes writes through to W and keeps the BENCH lines written. It is safe for
// concurrent use.
type Recorder struct {
	W         io.Writer
	mu        sync.Mutex
	partial   []byte
	lines     []Line
	pgVersion string
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
		line := string(r.partial[:i])
		if l, ok := ParseLine(line); ok {
			r.lines = append(r.lines, l)
		} else if v, ok := strings.CutPrefix(line, envLinePrefix+"postgres="); ok {
			r.pgVersion = strings.TrimSpace(v)
		}
		r.partial = r.partial[i+1:]
	}
	return r.W.Write(p)
}

// PostgresVersion returns the PostgreSQL version a child stage reported ("" if none did).
func (r *Recorder) PostgresVersion() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pgVersion
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

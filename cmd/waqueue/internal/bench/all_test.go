package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/waqueue/waqueue/adapters/pgcluster/pgtest"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/internal/testwait"
)

// figureFormats are the BENCH line shapes of each benchmark: the numeric fields listed must
// be positive.
var figureFormats = []struct {
	name     *regexp.Regexp
	fields   *regexp.Regexp
	positive []string
}{
	{regexp.MustCompile(`^store/(postgres|sqlite)/(append-batch|append-single|catch-up)$`),
		regexp.MustCompile(`^events_per_s=\d+ baseline=\S+ baseline_per_s=\d+ ratio=\d+\.\d\d rss_mib=\d+\.\d$`),
		[]string{"events_per_s", "baseline_per_s"}},
	{regexp.MustCompile(`^clear/(postgres|sqlite)/pending=\d+$`),
		regexp.MustCompile(`^p50_ms=[\d.]+ p99_ms=[\d.]+ dropped_p99_ms=[\d.]+ cold_ms=[\d.]+ clears=\d+ baseline=delete baseline_ms=[\d.]+ ratio=[\d.]+ rss_mib=[\d.]+$`),
		[]string{"p50_ms", "p99_ms", "cold_ms", "clears", "baseline_ms"}},
	{regexp.MustCompile(`^catchup/(postgres|sqlite)/events=\d+$`),
		regexp.MustCompile(`^events_per_s=[\d.]+ baseline=subscribe baseline_per_s=[\d.]+ ratio=[\d.]+ rss_mib=[\d.]+$`),
		[]string{"events_per_s", "baseline_per_s"}},
	{regexp.MustCompile(`^dispatch/(postgres|sqlite)/conns=\d+$`),
		regexp.MustCompile(`^msgs_per_s=[\d.]+ msgs=\d+ events_per_msg=[\d.]+ writers=\d+ group_commit=\d+ settled_s=[\d.]+ cpu_us_per_msg=[\d.]+ db_cpu_us_per_msg=[\d.]+ db_xacts_per_msg=[\d.]+ cpu_us_per_insert=[\d.]+ db_cpu_us_per_insert=[\d.]+ baseline=insert baseline_per_s=[\d.]+ ratio=[\d.]+ rss_mib=[\d.]+$`),
		[]string{"msgs_per_s", "events_per_msg", "baseline_per_s"}},
	{regexp.MustCompile(`^scale/(postgres|sqlite)/conns=\d+/active=\d+/sessions=(all|lazy)$`),
		regexp.MustCompile(`^transport=simulator msgs_per_s=[\d.]+ startup_s=[\d.]+ first_send_s=[\d.]+ dispatching=\d+ rss_now_mib=[\d.]+ goroutines=\d+ cpu_per_1k_active=[\d.]+ db_cpu_per_1k_active=[\d.]+ events_per_s=[\d.]+ db_commits_per_s=[\d.]+ db_rows_per_s=[\d.]+ pace_delay_ms=[\d.]+ drained=\d+ leases_held=\d+ seed_s=[\d.]+ baseline=paced baseline_per_s=[\d.]+ ratio=[\d.]+ rss_mib=[\d.]+$`),
		[]string{"startup_s", "first_send_s", "rss_now_mib", "goroutines", "baseline_per_s"}},
	{regexp.MustCompile(`^api/(postgres|sqlite)/enqueue(-no-ryw)?$`),
		regexp.MustCompile(`^req_per_s=[\d.]+ p50_ms=[\d.]+ p99_ms=[\d.]+ clients=\d+ settled_s=[\d.]+ group_commit=\d+ append_single_per_s=[\d.]+ baseline=insert baseline_per_s=[\d.]+ ratio=[\d.]+ ` +
			`cpu_us_per_req=[\d.]+ db_cpu_us_per_req=[\d.]+ db_xacts_per_req=[\d.]+ cpu_us_per_insert=[\d.]+ db_cpu_us_per_insert=[\d.]+ http_noop_per_s=[\d.]+ http_noop_cpu_us_per_req=[\d.]+ rss_mib=[\d.]+$`),
		[]string{"req_per_s", "p99_ms", "settled_s", "baseline_per_s", "http_noop_per_s", "http_noop_cpu_us_per_req", "rss_mib"}},
	{regexp.MustCompile(`^import/(postgres|sqlite)/recipients=\d+$`),
		regexp.MustCompile(`^msgs_per_s=[\d.]+ answered_s=[\d.]+ pending_s=[\d.]+ settled_s=[\d.]+ baseline=copy baseline_per_s=[\d.]+ ratio=[\d.]+ rss_mib=[\d.]+$`),
		// Not pending_s: printed in seconds with two decimals, a tiny import pending within
		// 5 ms reads 0.00 (msgs_per_s, from the same time, shows it was measured).
		[]string{"msgs_per_s", "baseline_per_s"}},
}

// checkLine fails t unless s is a BENCH line of a known benchmark with positive figures.
func checkLine(t *testing.T, s string) Line {
	t.Helper()
	l, ok := ParseLine(s)
	if !ok {
		t.Fatalf("%q is not a BENCH line", s)
	}
	rest := strings.TrimPrefix(s, "BENCH "+l.Name+" ")
	for _, f := range figureFormats {
		if !f.name.MatchString(l.Name) {
			continue
		}
		if !f.fields.MatchString(rest) {
			t.Fatalf("line %q: fields do not match %s", s, f.fields)
		}
		for _, k := range f.positive {
			if v, err := strconv.ParseFloat(l.Field(k), 64); err != nil || v <= 0 {
				t.Fatalf("line %q: %s=%q is not positive", s, k, l.Field(k))
			}
		}
		return l
	}
	t.Fatalf("line %q names no known figure", s)
	return l
}

// tinyInterval is the scale figure's pacing in TestAllTiny: the sending policy's floor.
var tinyInterval = connection.MinMinInterval

// tinyAllConfig is `bench all` at tiny sizes on both engines, PostgreSQL at dbURL.
func tinyAllConfig(dbURL, dir string) AllConfig {
	return AllConfig{
		Env:      EnvConfig{DatabaseURL: dbURL, Dir: dir},
		Store:    Config{CatchUpEvents: 300, BatchEvents: 100, BatchSize: 50, SingleEvents: 16, Writers: 4, Rounds: 1},
		Clear:    ClearConfig{Sizes: []int{50, 120}, Clears: 2},
		Dispatch: DispatchConfig{Conns: []int{3}, Messages: 30, SetupWorkers: 3},
		API:      APIConfig{Clients: 4, Requests: 24},
		Import:   ImportConfig{Recipients: 40},
		Scale: ScaleConfig{Conns: 12, Active: 3, Window: time.Second, StartupLimit: testwait.Limit, Messages: 400, BothSessions: true,
			Policy: connection.SendingPolicyPatch{MinInterval: &tinyInterval, Jitter: &tinyInterval}, SetupWorkers: 4},
		Command: "waqueue bench all --tiny",
		Now:     func() time.Time { return time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC) },
	}
}

// Environment of a stage process in TestAllSpawnsAProcessPerStage: this test binary, run
// again, is the stage's process (see TestMain).
const (
	envChildStage = "WAQUEUE_BENCH_TEST_STAGE"
	envChildDB    = "WAQUEUE_BENCH_TEST_DB"
	envChildDir   = "WAQUEUE_BENCH_TEST_DIR"
	envChildFail  = "WAQUEUE_BENCH_TEST_FAIL"
)

// stageProcess runs as a stage's child process when the test binary is started with
// envChildStage set: the tiny `bench all` limited to that stage, with its pid on a line of its
// own, as `waqueue bench all --stage-process` does. It reports whether it ran.
func stageProcess() bool {
	stage := os.Getenv(envChildStage)
	if stage == "" {
		return false
	}
	if os.Getenv(envChildFail) == stage {
		fmt.Fprintln(os.Stderr, "stage failed on purpose")
		os.Exit(3)
	}
	cfg := tinyAllConfig(os.Getenv(envChildDB), os.Getenv(envChildDir))
	cfg.Env.Adapters = []string{AdapterPostgres}
	cfg.Stages = []string{stage}
	fmt.Printf("pid %d\n", os.Getpid())
	if err := All(context.Background(), cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
	return true
}

// TestAllSpawnsAProcessPerStage runs two stages of `bench all`, each in a child process: their
// BENCH lines reach the parent's output and document, with the PostgreSQL version the children
// measured; every stage ran in a process of its own; a failing stage fails the run, named.
func TestAllSpawnsAProcessPerStage(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testwait.AtLeast(5*time.Minute))
	defer cancel()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dbURL, dir := pgtest.URL(t), t.TempDir()
	var spawned []string
	spawn := func(fail string) func(context.Context, string) *exec.Cmd {
		return func(ctx context.Context, stage string) *exec.Cmd {
			spawned = append(spawned, stage)
			cmd := exec.CommandContext(ctx, exe, "-test.run=^$")
			cmd.Env = append(os.Environ(), envChildStage+"="+stage, envChildDB+"="+dbURL, envChildDir+"="+dir, envChildFail+"="+fail)
			return cmd
		}
	}
	doc := filepath.Join(t.TempDir(), "benchmarks.md")
	cfg := tinyAllConfig("", "")
	cfg.Stages, cfg.DocPath, cfg.Spawn = []string{StageAPI, StageDispatch}, doc, spawn("")
	var out bytes.Buffer
	if err := All(ctx, cfg, &out); err != nil {
		t.Fatalf("All: %v\noutput:\n%s", err, out.String())
	}
	if want := []string{StageDispatch, StageAPI}; !slices.Equal(spawned, want) {
		t.Errorf("stages spawned %v, want %v (AllStages' order)", spawned, want)
	}
	pids := map[string]bool{strconv.Itoa(os.Getpid()): true}
	var names []string
	for _, s := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		switch {
		case strings.HasPrefix(s, "pid "):
			pid := strings.TrimPrefix(s, "pid ")
			if pids[pid] {
				t.Errorf("pid %s ran two stages, or is the test's own", pid)
			}
			pids[pid] = true
		case strings.HasPrefix(s, envLinePrefix):
		default:
			names = append(names, checkLine(t, s).Name)
		}
	}
	if len(pids) != 3 {
		t.Errorf("%d stage processes, want 2:\n%s", len(pids)-1, out.String())
	}
	if want := []string{"dispatch/postgres/conns=3", "api/postgres/enqueue"}; !slices.Equal(names, want) {
		t.Errorf("figures %v, want %v", names, want)
	}
	b, err := os.ReadFile(doc)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| dispatch/postgres/conns=3 |", "| api/postgres/enqueue |"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("document lacks %q:\n%s", want, b)
		}
	}
	pgMajor(t, string(b))

	spawned = nil
	cfg.Spawn, cfg.DocPath = spawn(StageDispatch), ""
	err = All(ctx, cfg, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "stage dispatch") {
		t.Errorf("All with a failing dispatch stage: %v, want an error naming the stage", err)
	}
	if !slices.Equal(spawned, []string{StageDispatch}) {
		t.Errorf("stages spawned %v: the run went on after a failed stage", spawned)
	}
}

// TestAllTiny runs every benchmark at tiny sizes on both engines so that none can rot, and
// checks the output and the results document. It never checks a speed.
func TestAllTiny(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testwait.AtLeast(5*time.Minute))
	defer cancel()
	doc := filepath.Join(t.TempDir(), "benchmarks.md")
	const intro, outro = "# Benchmarks\n\nHand-written analysis.\n\n", "\n## After\n\nMore text.\n"
	if err := os.WriteFile(doc, []byte(intro+DocBegin+"\nold results\n"+DocEnd+outro), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := tinyAllConfig(pgtest.URL(t), t.TempDir())
	cfg.DocPath = doc
	var out bytes.Buffer
	if err := All(ctx, cfg, &out); err != nil {
		t.Fatalf("All: %v\noutput so far:\n%s", err, out.String())
	}
	seen := map[string]Line{}
	for _, s := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		l := checkLine(t, s)
		if _, dup := seen[l.Name]; dup {
			t.Fatalf("figure %s printed twice", l.Name)
		}
		seen[l.Name] = l
	}
	for _, e := range []string{"postgres", "sqlite"} {
		for _, name := range []string{"store/" + e + "/append-batch", "store/" + e + "/append-single", "store/" + e + "/catch-up",
			"clear/" + e + "/pending=50", "clear/" + e + "/pending=120", "dispatch/" + e + "/conns=3", "api/" + e + "/enqueue",
			"import/" + e + "/recipients=40", "scale/" + e + "/conns=12/active=3/sessions=all", "scale/" + e + "/conns=12/active=3/sessions=lazy"} {
			if _, ok := seen[name]; !ok {
				t.Errorf("figure %s missing:\n%s", name, out.String())
			}
		}
		if l := seen["clear/"+e+"/pending=120"]; l.Field("clears") != "2" {
			t.Errorf("clear/%s/pending=120 measured %s clears, want 2", e, l.Field("clears"))
		}
		// Every message of the dispatch figure was sent: 3 connections × 10 messages.
		if l := seen["dispatch/"+e+"/conns=3"]; l.Field("msgs") != "30" {
			t.Errorf("dispatch/%s/conns=3 sent %s messages, want 30", e, l.Field("msgs"))
		}
	}
	var catchups int
	for name := range seen {
		if strings.HasPrefix(name, "catchup/") {
			catchups++
		}
	}
	if catchups != 4 {
		t.Errorf("%d catch-up figures, want one per engine and clear size (4)", catchups)
	}

	b, err := os.ReadFile(doc)
	if err != nil {
		t.Fatal(err)
	}
	got := string(b)
	if !strings.HasPrefix(got, intro+DocBegin+"\n") || !strings.HasSuffix(got, DocEnd+outro) {
		t.Fatalf("the text around the markers changed:\n%s", got)
	}
	if strings.Contains(got, "old results") {
		t.Errorf("the old section was not replaced:\n%s", got)
	}
	for _, want := range []string{"`waqueue bench all --tiny`", "2026-11-25", "| clear/postgres/pending=120 |", "| api/sqlite/enqueue |", "PostgreSQL " + pgMajor(t, got)} {
		if !strings.Contains(got, want) {
			t.Errorf("document lacks %q:\n%s", want, got)
		}
	}
	if n := strings.Count(got, "| store/") + strings.Count(got, "| clear/") + strings.Count(got, "| catchup/") +
		strings.Count(got, "| dispatch/") + strings.Count(got, "| api/") + strings.Count(got, "| import/") + strings.Count(got, "| scale/"); n != len(seen) {
		t.Errorf("document has %d figure rows, output %d lines", n, len(seen))
	}
}

// pgMajor returns the PostgreSQL version the document names, failing if it names none.
func pgMajor(t *testing.T, doc string) string {
	t.Helper()
	m := regexp.MustCompile(`PostgreSQL (\d+(\.\d+)?)`).FindStringSubmatch(doc)
	if m == nil {
		t.Fatalf("document names no PostgreSQL version:\n%s", doc)
	}
	return m[1]
}

func TestWriteDoc(t *testing.T) {
	dir := t.TempDir()
	// A file without markers gets them appended; a second write replaces only the section.
	p := filepath.Join(dir, "a.md")
	if err := os.WriteFile(p, []byte("# Title"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, section := range []string{"first\n", "second\n"} {
		if err := WriteDoc(p, section); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := os.ReadFile(p)
	if want := "# Title\n\n" + DocBegin + "\nsecond\n" + DocEnd + "\n"; string(b) != want {
		t.Errorf("document = %q, want %q", b, want)
	}
	// A missing file is created.
	q := filepath.Join(dir, "new.md")
	if err := WriteDoc(q, "x\n"); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(q); !bytes.Contains(b, []byte(DocBegin+"\nx\n"+DocEnd)) {
		t.Errorf("new document = %q", b)
	}
	// A broken section (end before begin) is refused, the file left alone.
	r := filepath.Join(dir, "broken.md")
	broken := DocEnd + "\n" + DocBegin + "\n"
	if err := os.WriteFile(r, []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteDoc(r, "y\n"); err == nil {
		t.Error("WriteDoc accepted a section whose end marker comes first")
	}
	if b, _ := os.ReadFile(r); string(b) != broken {
		t.Errorf("broken document was changed to %q", b)
	}
}

func TestParseLineAndPercentile(t *testing.T) {
	l, ok := ParseLine("BENCH clear/sqlite/pending=10 p50_ms=1.50 baseline=delete ratio=2.00")
	if !ok || l.Name != "clear/sqlite/pending=10" || l.Field("p50_ms") != "1.50" || l.Field("baseline") != "delete" || l.Field("nope") != "" {
		t.Fatalf("ParseLine = %+v, %v", l, ok)
	}
	if l.String() != "BENCH clear/sqlite/pending=10 p50_ms=1.50 baseline=delete ratio=2.00" {
		t.Errorf("String() = %q", l.String())
	}
	for _, s := range []string{"PASS", "BENCH", "BENCH x novalue"} {
		if _, ok := ParseLine(s); ok {
			t.Errorf("ParseLine(%q) accepted it", s)
		}
	}
	ds := make([]time.Duration, 100)
	for i := range ds {
		ds[i] = time.Duration(100-i) * time.Millisecond // unsorted on purpose
	}
	if p := percentile(ds, 50); p != 50*time.Millisecond {
		t.Errorf("p50 = %v, want 50ms", p)
	}
	if p := percentile(ds, 99); p != 99*time.Millisecond {
		t.Errorf("p99 = %v, want 99ms", p)
	}
	if p := percentile(ds[:2], 99); p != 100*time.Millisecond {
		t.Errorf("p99 of two = %v, want the larger (100ms)", p)
	}
}

// TestAPIWithoutReadYourWrites runs the diagnostic API figure (no read-your-writes wait).
func TestAPIWithoutReadYourWrites(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Limit)
	defer cancel()
	env, err := NewEnv(EnvConfig{Dir: t.TempDir(), Adapters: []string{AdapterSQLite}})
	if err != nil {
		t.Fatal(err)
	}
	defer env.Close()
	var out bytes.Buffer
	if err := API(ctx, env, APIConfig{Clients: 3, Requests: 9, ReadYourWrites: -1}, &out); err != nil {
		t.Fatalf("API: %v\n%s", err, out.String())
	}
	if l := checkLine(t, strings.TrimSpace(out.String())); l.Name != "api/sqlite/enqueue-no-ryw" {
		t.Errorf("figure %s, want api/sqlite/enqueue-no-ryw", l.Name)
	}
}

func TestReadLinesRendersEveryFigure(t *testing.T) {
	in := "waqueue: starting\nBENCH clear/sqlite/pending=10 p50_ms=1.50 p99_ms=2.00 baseline=delete baseline_ms=4.00 ratio=0.50 rss_mib=9.0\nok\n" +
		"BENCH api/sqlite/enqueue req_per_s=100 p99_ms=3.00 baseline=append-single baseline_per_s=200 ratio=0.50 rss_mib=9.5\n"
	lines, err := ReadLines(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != 2 || lines[0].Name != "clear/sqlite/pending=10" || lines[1].Field("req_per_s") != "100" {
		t.Fatalf("ReadLines = %+v", lines)
	}
	m := ThisMachine(time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC))
	m.Command = "waqueue bench api"
	table := RenderTable(m, lines)
	for _, want := range []string{
		"| clear/sqlite/pending=10 | p50_ms=1.50 p99_ms=2.00 | delete | baseline_ms=4.00 | 0.50 | 9.0 |",
		"| api/sqlite/enqueue | req_per_s=100 p99_ms=3.00 | append-single | baseline_per_s=200 | 0.50 | 9.5 |",
		"2026-01-02 03:04 UTC", "`waqueue bench api`", "PostgreSQL not measured",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
}

// TestWindowProfilesOnePerFigure: with several figures, each window's CPU profile gets a file
// of its own instead of overwriting the one before (the dispatch flag wrote only the last one).
func TestWindowProfilesOnePerFigure(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testwait.AtLeast(2*time.Minute))
	defer cancel()
	env, err := NewEnv(EnvConfig{Dir: t.TempDir(), Adapters: []string{AdapterSQLite}})
	if err != nil {
		t.Fatal(err)
	}
	defer env.Close()
	prof := filepath.Join(t.TempDir(), "d.cpu")
	var out bytes.Buffer
	if err := Dispatch(ctx, env, DispatchConfig{Conns: []int{2, 3}, Messages: 12, SetupWorkers: 2, CPUProfile: prof}, &out); err != nil {
		t.Fatalf("Dispatch: %v\n%s", err, out.String())
	}
	for _, name := range []string{prof + ".sqlite.2", prof + ".sqlite.3"} {
		if fi, err := os.Stat(name); err != nil || fi.Size() == 0 {
			t.Errorf("profile %s: %v (size %d)", filepath.Base(name), err, sizeOf(fi))
		}
	}
	if _, err := os.Stat(prof); err == nil {
		t.Errorf("a profile was written to %s itself as well", filepath.Base(prof))
	}
}

func sizeOf(fi os.FileInfo) int64 {
	if fi == nil {
		return -1
	}
	return fi.Size()
}

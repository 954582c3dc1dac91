package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/waqueue/waqueue/cmd/waqueue/internal/bench"
)

// benchFlags are the flags shared by every bench subcommand, and the sizes of each.
type benchFlags struct {
	env      bench.EnvConfig
	store    bench.Config
	clear    bench.ClearConfig
	dispatch bench.DispatchConfig
	api      bench.APIConfig
	imp      bench.ImportConfig
	scale    bench.ScaleConfig
	quick    bool
	doc      string
	// groupCommit is --group-commit, copied to the store and api configurations.
	groupCommit int
}

// applyQuick sets the small sizes of --quick wherever the user gave no size.
func (f *benchFlags) applyQuick() {
	if !f.quick {
		return
	}
	if f.store.CatchUpEvents == 0 {
		f.store.CatchUpEvents = 100_000
	}
	if f.store.BatchEvents == 0 {
		f.store.BatchEvents = 20_000
	}
	if f.store.SingleEvents == 0 {
		f.store.SingleEvents = 2000
	}
	if len(f.clear.Sizes) == 0 {
		f.clear.Sizes = bench.QuickSizes
	}
	if len(f.dispatch.Conns) == 0 {
		f.dispatch.Conns = []int{100, 1000}
	}
	if f.dispatch.Messages == 0 {
		f.dispatch.Messages = 5000
	}
	if f.api.Requests == 0 {
		f.api.Requests = 1600
	}
	if f.imp.Recipients == 0 {
		f.imp.Recipients = 20_000
	}
	if f.scale.Conns == 0 {
		f.scale.Conns = bench.QuickScale.Conns
	}
	if f.scale.Active == 0 {
		f.scale.Active = min(bench.QuickScale.Active, f.scale.Conns)
	}
	if f.scale.Window == 0 {
		f.scale.Window = bench.QuickScale.Window
	}
}

func (f *benchFlags) envConfig() bench.EnvConfig { return f.env }

func withEnv(ctx context.Context, f *benchFlags, run func(*bench.Env) error) (err error) {
	f.applyQuick()
	env, err := bench.NewEnv(f.envConfig())
	if err != nil {
		return err
	}
	defer func() {
		if cerr := env.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	return run(env)
}

func newBenchCmd() *cobra.Command {
	var f benchFlags
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Run benchmarks; each prints BENCH lines with a same-run baseline and ratio",
		Long: `Run benchmarks against a throwaway durable PostgreSQL cluster (or the scratch database
given with --db) and a temporary SQLite file. Every figure is printed as one BENCH line with a
baseline measured in the same run and the ratio between them, plus the peak RSS (rss_mib).`,
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&f.env.DatabaseURL, "db", "", "scratch PostgreSQL database URL (default: a throwaway cluster)")
	pf.StringVar(&f.env.Dir, "dir", "", "directory for temporary files")
	pf.StringSliceVar(&f.env.Adapters, "adapter", nil, "engines to measure: postgres, sqlite (default both)")
	pf.BoolVar(&f.quick, "quick", false, "small sizes (a few minutes in all)")
	pf.IntVar(&f.groupCommit, "group-commit", 0, "PostgreSQL event store: group concurrent single-event appends in at most N shared transactions at once (store, api and dispatch figures); 0: the server's default (2), -1: off")
	var cpuProfile string
	pf.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run to this file (go tool pprof)")
	var profile *os.File
	cmd.PersistentPreRunE = func(*cobra.Command, []string) error {
		if cpuProfile == "" {
			return nil
		}
		var err error
		if profile, err = os.Create(cpuProfile); err != nil {
			return err
		}
		return pprof.StartCPUProfile(profile)
	}
	cmd.PersistentPostRunE = func(*cobra.Command, []string) error {
		if profile == nil {
			return nil
		}
		pprof.StopCPUProfile()
		return profile.Close()
	}

	store := &cobra.Command{
		Use:   "store",
		Short: "Event store appends (single, batch) and catch-up against COPY/INSERT/SELECT baselines",
		RunE: func(c *cobra.Command, _ []string) error {
			f.applyQuick()
			f.store.DatabaseURL, f.store.Dir, f.store.Adapters = f.env.DatabaseURL, f.env.Dir, f.env.Adapters
			f.store.GroupCommit = f.groupCommit
			return bench.Store(c.Context(), f.store, c.OutOrStdout())
		},
	}
	storeFlags(store, &f)

	clear := &cobra.Command{
		Use:   "clear",
		Short: "Clear latency at 1k/100k/1M pending against a plain DELETE; projection catch-up against Subscribe",
		RunE: func(c *cobra.Command, _ []string) error {
			return withEnv(c.Context(), &f, func(env *bench.Env) error { return bench.Clear(c.Context(), env, f.clear, c.OutOrStdout()) })
		},
	}
	clearFlags(clear, &f)

	dispatch := &cobra.Command{
		Use:   "dispatch",
		Short: "Dispatcher throughput over 100/1k/10k connections against single-row INSERT commits",
		RunE: func(c *cobra.Command, _ []string) error {
			f.dispatch.GroupCommit = f.groupCommit
			return withEnv(c.Context(), &f, func(env *bench.Env) error {
				return bench.Dispatch(c.Context(), env, f.dispatch, c.OutOrStdout())
			})
		},
	}
	dispatchFlags(dispatch, &f)
	dispatchHeapProfileFlag(dispatch, &f)

	api := &cobra.Command{
		Use:   "api",
		Short: "HTTP enqueue with 64 clients against the store's single-event appends",
		RunE: func(c *cobra.Command, _ []string) error {
			f.api.GroupCommit = f.groupCommit
			return withEnv(c.Context(), &f, func(env *bench.Env) error { return bench.API(c.Context(), env, f.api, c.OutOrStdout()) })
		},
	}
	apiFlags(api, &f)

	imp := &cobra.Command{
		Use:   "import",
		Short: "A CSV broadcast over HTTP until all of it is pending in the queue read model, against COPY of the same rows",
		RunE: func(c *cobra.Command, _ []string) error {
			return withEnv(c.Context(), &f, func(env *bench.Env) error { return bench.Import(c.Context(), env, f.imp, c.OutOrStdout()) })
		},
	}
	importFlags(imp, &f)

	scale := &cobra.Command{
		Use:   "scale",
		Short: "One node: 100k registered connections, 10k sending at the default pacing, on the simulator: RSS, goroutines, CPU, paced rate held",
		RunE: func(c *cobra.Command, _ []string) error {
			return withEnv(c.Context(), &f, func(env *bench.Env) error { return bench.Scale(c.Context(), env, f.scale, c.OutOrStdout()) })
		},
	}
	scaleFlags(scale, &f)

	var (
		stages     []string
		childStage string
		inProcess  bool
	)
	all := &cobra.Command{
		Use:   "all",
		Short: "store, clear (with catch-up), dispatch, api, import and scale; writes the results table into docs/benchmarks.md",
		RunE: func(c *cobra.Command, _ []string) error {
			f.applyQuick()
			f.store.GroupCommit, f.api.GroupCommit, f.dispatch.GroupCommit = f.groupCommit, f.groupCommit, f.groupCommit
			cfg := bench.AllConfig{
				Env: f.envConfig(), Store: f.store, Clear: f.clear, Dispatch: f.dispatch, API: f.api, Import: f.imp, Scale: f.scale,
				Stages: stages, DocPath: f.doc, Command: commandLine(os.Args),
			}
			switch {
			case childStage != "":
				cfg.Stages, cfg.DocPath = []string{childStage}, ""
			case !inProcess:
				exe, err := os.Executable()
				if err != nil {
					return fmt.Errorf("bench all: this program's path, for its stages' processes: %w (or use --in-process)", err)
				}
				cfg.Spawn = func(ctx context.Context, stage string) *exec.Cmd {
					return exec.CommandContext(ctx, exe, childArgs(os.Args[1:], stage, cpuProfile)...)
				}
			}
			return bench.All(c.Context(), cfg, c.OutOrStdout())
		},
	}
	storeFlags(all, &f)
	clearFlags(all, &f)
	dispatchFlags(all, &f)
	apiFlags(all, &f)
	importFlags(all, &f)
	scaleFlags(all, &f)
	all.Flags().StringVar(&f.doc, "doc", "docs/benchmarks.md", "Markdown file whose bench:begin/bench:end section receives the results (empty: none)")
	all.Flags().StringSliceVar(&stages, "stages", nil, "stages to run, in their fixed order: "+strings.Join(bench.AllStages, ",")+" (default all)")
	all.Flags().BoolVar(&inProcess, "in-process", false, "run every stage in this process (default: each in its own, so each stage's rss_mib is its own)")
	all.Flags().StringVar(&childStage, childStageFlag, "", "run only this stage, without a document (what each stage's own process is given)")
	_ = all.Flags().MarkHidden(childStageFlag)

	var from, pgVersion, command, loadBefore string
	doc := &cobra.Command{
		Use:   "doc",
		Short: "Write the results section of docs/benchmarks.md from saved BENCH output (of runs made part by part)",
		RunE: func(c *cobra.Command, _ []string) error {
			in, err := os.Open(from)
			if err != nil {
				return err
			}
			defer in.Close()
			lines, err := bench.ReadLines(in)
			if err != nil {
				return err
			}
			m := bench.ThisMachine(time.Now())
			m.PostgreSQL, m.Command = pgVersion, command
			if loadBefore != "" {
				m.LoadBefore = loadBefore
			}
			return bench.WriteDoc(f.doc, bench.RenderTable(m, lines))
		},
	}
	doc.Flags().StringVar(&from, "from", "", "file holding the BENCH lines (required)")
	doc.Flags().StringVar(&pgVersion, "postgres-version", "", "PostgreSQL version measured")
	doc.Flags().StringVar(&command, "command", "waqueue bench all", "command line the lines came from")
	doc.Flags().StringVar(&loadBefore, "load-before", "", "load average when the runs started")
	doc.Flags().StringVar(&f.doc, "doc", "docs/benchmarks.md", "Markdown file whose bench:begin/bench:end section receives the results")
	_ = doc.MarkFlagRequired("from")

	cmd.AddCommand(store, clear, dispatch, api, imp, scale, all, doc)
	return cmd
}

func storeFlags(c *cobra.Command, f *benchFlags) {
	fl := c.Flags()
	fl.IntVar(&f.store.CatchUpEvents, "catch-up-events", 0, "events read by the store catch-up figure (default 1,000,000)")
	fl.IntVar(&f.store.BatchEvents, "batch-events", 0, "events written by the batch figure (default 200,000)")
	fl.IntVar(&f.store.SingleEvents, "single-events", 0, "single-event appends (default 8,000)")
	fl.IntVar(&f.store.Rounds, "rounds", 0, "rounds per store figure (default 3)")
}

func clearFlags(c *cobra.Command, f *benchFlags) {
	fl := c.Flags()
	fl.IntSliceVar(&f.clear.Sizes, "sizes", nil, "pending messages per clear figure (default 1000,100000,1000000; --quick 1000,10000)")
	fl.IntVar(&f.clear.Clears, "clears", 0, "clears per size (default 5 below 100k, 3 below 1M, 2 at 1M and above)")
}

func dispatchFlags(c *cobra.Command, f *benchFlags) {
	fl := c.Flags()
	fl.IntSliceVar(&f.dispatch.Conns, "conns", nil, "connection counts (default 100,1000,10000; --quick 100,1000)")
	fl.IntVar(&f.dispatch.Messages, "messages", 0, "messages per dispatch figure, spread over the connections (default 20,000)")
	fl.StringVar(&f.dispatch.CPUProfile, "window-cpuprofile", "", "dispatch: write a CPU profile of the timed window to this file, FILE.<engine>.<conns> when several figures (go tool pprof; not with --cpuprofile)")
}

// dispatchHeapProfileFlag is bench dispatch's own --heap-profile (bench all's is scale's).
func dispatchHeapProfileFlag(c *cobra.Command, f *benchFlags) {
	c.Flags().StringVar(&f.dispatch.HeapProfile, "heap-profile", "", "write a heap profile at the highest RSS sampled (or at the end) to this file, suffixed .<engine>.<conns> when several figures run (go tool pprof)")
}

func apiFlags(c *cobra.Command, f *benchFlags) {
	fl := c.Flags()
	fl.IntVar(&f.api.Clients, "clients", 0, "concurrent HTTP clients (default 64)")
	fl.IntVar(&f.api.Requests, "requests", 0, "enqueue requests measured (default 6,400)")
	fl.StringVar(&f.api.WindowProfile, "window-profile", "", "api: write a CPU profile of the measured requests only to this file, FILE.<engine> when several engines (go tool pprof; not with --cpuprofile)")
	fl.DurationVar(&f.api.ReadYourWrites, "read-your-writes", 0, "API read-your-writes wait (default the server's; negative disables it: figure api/<engine>/enqueue-no-ryw)")
}

func importFlags(c *cobra.Command, f *benchFlags) {
	c.Flags().IntVar(&f.imp.Recipients, "recipients", 0, "numbers of the imported CSV broadcast (default 100,000; --quick 20,000)")
}

func scaleFlags(c *cobra.Command, f *benchFlags) {
	fl := c.Flags()
	fl.IntVar(&f.scale.Conns, "registered", 0, "scale: registered connections (default 100,000; --quick 2,000)")
	fl.IntVar(&f.scale.Active, "active", 0, "scale: connections sending at the default pacing (default 10,000; --quick 200)")
	fl.DurationVar(&f.scale.Window, "window", 0, "scale: how long the paced rate is measured (default 60s; --quick 20s)")
	fl.StringVar(&f.scale.HeapProfile, "heap-profile", "", "scale: write a heap profile of the measured node at the end of the window to this file, and one as of the last GC at the end of the start-up to FILE.startup (go tool pprof)")
	fl.BoolVar(&f.scale.LazySessions, "lazy-sessions", false, "scale: idle connections get neither lease nor session until they have work (server.Options.LazySessions)")
	fl.BoolVar(&f.scale.BothSessions, "both-sessions", false, "scale: measure two restarts on one seed, without and with --lazy-sessions")
	fl.IntVar(&f.scale.Messages, "broadcast", 0, "scale: messages per active connection (default enough for 1 min of start-up and the window)")
}

// childStageFlag names the hidden flag `bench all` gives each stage's process.
const childStageFlag = "stage-process"

// childArgs returns the arguments of stage's own process: this run's (args, without the
// program name) with only that stage, no document, and its own CPU profile file if this run
// writes one (flags given later win).
func childArgs(args []string, stage, cpuProfile string) []string {
	out := append(slices.Clip(args), "--"+childStageFlag, stage, "--doc", "")
	if cpuProfile != "" {
		out = append(out, "--cpuprofile", cpuProfile+"."+stage)
	}
	return out
}

// commandLine renders the command as run, for the results document ("waqueue bench all …").
func commandLine(args []string) string {
	out := []string{"waqueue"}
	if len(args) > 1 {
		out = append(out, args[1:]...)
	}
	return strings.Join(out, " ")
}

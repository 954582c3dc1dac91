package main

import (
	"github.com/spf13/cobra"

	"github.com/waqueue/waqueue/cmd/waqueue/internal/bench"
)

func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Run benchmarks; each prints BENCH lines with a same-run baseline and ratio",
	}
	var storeCfg bench.Config
	var adapters []string
	store := &cobra.Command{
		Use:   "store",
		Short: "Event store appends (single, batch) and catch-up against COPY/INSERT/SELECT baselines",
		RunE: func(c *cobra.Command, _ []string) error {
			storeCfg.Adapters = adapters
			return bench.Store(c.Context(), storeCfg, c.OutOrStdout())
		},
	}
	f := store.Flags()
	f.StringVar(&storeCfg.DatabaseURL, "db", "", "scratch PostgreSQL database URL (default: a throwaway cluster)")
	f.StringVar(&storeCfg.Dir, "dir", "", "directory for temporary files")
	f.IntVar(&storeCfg.CatchUpEvents, "catch-up-events", 0, "events read by the catch-up figure (default 1,000,000)")
	f.IntVar(&storeCfg.BatchEvents, "batch-events", 0, "events written by the batch figure (default 200,000)")
	f.IntVar(&storeCfg.SingleEvents, "single-events", 0, "single-event appends (default 8,000)")
	f.IntVar(&storeCfg.Rounds, "rounds", 0, "rounds per figure (default 3)")
	f.StringSliceVar(&adapters, "adapter", nil, "adapters to measure: postgres, sqlite (default both)")
	cmd.AddCommand(store)
	return cmd
}

package main

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/server"
	"github.com/waqueue/waqueue/cmd/waqueue/internal/config"
	"github.com/waqueue/waqueue/projections"
)

func newProjectionsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "projections", Short: "Maintain the read models (works on the database; stop the server first)"}
	rebuild := withConfig(&cobra.Command{
		Use:   "rebuild [NAME...]",
		Short: "Rebuild read models from the event log (all of them without NAME); the server must be stopped",
		Long: `Rebuild deletes the rows and the checkpoint of each named read model (cards, queue,
message status, audit, analytics; all of them without a NAME) and replays the whole event log into
them, then exits. It opens the database directly, like serve, so it takes the same store flags.

Stop every server on this database first: a running server would keep applying events to the
read models while they are rebuilt, and its API would answer from half-built tables.`,
	}, func(c *cobra.Command, cfg *config.Config) error {
		return rebuildProjections(c, cfg, c.Flags().Args())
	})
	cmd.AddCommand(rebuild)
	return cmd
}

func rebuildProjections(c *cobra.Command, cfg *config.Config, names []string) error {
	ctx := c.Context()
	o := serverOptions(cfg, newLogger(cfg.LogLevel))
	o.NoDispatcher = true
	o.BootstrapOut = c.OutOrStdout()
	node, err := server.New(ctx, o)
	if err != nil {
		return err
	}
	defer node.Close()
	all := []projections.Projection{node.Cards, node.Queue, node.Messages, node.Audit, node.Analytics, node.ClearReports}
	known := make([]string, len(all))
	for i, p := range all {
		known[i] = p.Name()
	}
	for _, n := range names {
		if !slices.Contains(known, n) {
			return fmt.Errorf("projections rebuild: unknown projection %q; known: %s", n, strings.Join(known, ", "))
		}
	}
	var chosen []projections.Projection
	for _, p := range all {
		if len(names) == 0 || slices.Contains(names, p.Name()) {
			chosen = append(chosen, p)
		}
	}
	for _, p := range chosen {
		if err := node.Runner.Rebuild(ctx, p.Name()); err != nil {
			return err
		}
	}
	// Replay: run the runner (every projection; the others are at their checkpoints) until
	// each rebuilt one has applied the last event it selects.
	runCtx, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		err := node.Runner.Run(runCtx)
		cancel(fmt.Errorf("projections rebuild: the runner stopped: %w", err))
	}()
	defer func() { cancel(context.Canceled); <-done }()
	for _, p := range chosen {
		last, err := lastMatching(runCtx, node.Events, p.Filter())
		if err != nil {
			return err
		}
		if last != nil {
			if err := node.Runner.WaitFor(runCtx, []string{p.Name()}, *last); err != nil {
				return fmt.Errorf("projections rebuild: %s: %w", p.Name(), context.Cause(runCtx))
			}
		}
		fmt.Fprintf(c.OutOrStdout(), "rebuilt %s\n", p.Name())
	}
	return nil
}

// lastMatching returns the position of the last event of store that f selects (nil if none).
func lastMatching(ctx context.Context, store eventstore.Store, f eventstore.Filter) (*eventstore.Position, error) {
	var last *eventstore.Position
	after := eventstore.Start
	for {
		evs, err := store.ReadAll(ctx, after, 10_000, f)
		if err != nil {
			return nil, err
		}
		if len(evs) == 0 {
			return last, nil
		}
		pos := evs[len(evs)-1].Position
		last, after = &pos, pos
	}
}

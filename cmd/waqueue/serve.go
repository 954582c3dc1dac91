package main

import (
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/waqueue/waqueue/cmd/waqueue/internal/app"
	"github.com/waqueue/waqueue/cmd/waqueue/internal/config"
)

// withConfig binds the server configuration to cmd's flags and fills cfg (flags, then
// environment, then validation) before run.
func withConfig(cmd *cobra.Command, run func(cmd *cobra.Command, cfg *config.Config) error) *cobra.Command {
	cfg := &config.Config{}
	cfg.Bind(cmd.Flags())
	cmd.RunE = func(c *cobra.Command, _ []string) error {
		if err := config.ApplyEnv(c.Flags(), os.LookupEnv); err != nil {
			return err
		}
		if err := cfg.Validate(); err != nil {
			return err
		}
		return run(c, cfg)
	}
	return cmd
}

func newMigrateCmd() *cobra.Command {
	return withConfig(&cobra.Command{
		Use:   "migrate",
		Short: "Create or upgrade the event store and read-model schemas, then exit",
	}, func(c *cobra.Command, cfg *config.Config) error {
		st, err := app.OpenStores(c.Context(), cfg, func() time.Time { return time.Now().UTC() })
		if err != nil {
			return err
		}
		defer st.Close()
		fmt.Fprintf(c.OutOrStdout(), "waqueue: schemas up to date (%s)\n", cfg.Engine())
		return nil
	})
}

func newServeCmd() *cobra.Command {
	return withConfig(&cobra.Command{
		Use:   "serve",
		Short: "Serve the HTTP API, run projections and dispatch messages",
	}, func(c *cobra.Command, cfg *config.Config) error {
		log := newLogger(cfg.LogLevel)
		return app.Serve(c.Context(), cfg, log, c.OutOrStdout())
	})
}

func newLogger(level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}

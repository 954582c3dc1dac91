package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/waqueue/waqueue/adapters/apikeys"
	"github.com/waqueue/waqueue/adapters/server"
	"github.com/waqueue/waqueue/adapters/webhooks"
	"github.com/waqueue/waqueue/cmd/waqueue/internal/config"
	"github.com/waqueue/waqueue/domain/auditchain"
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

func serverOptions(cfg *config.Config, log *slog.Logger) server.Options {
	o := server.Options{
		DataDir:         cfg.DataDir,
		DB:              cfg.DB,
		EventStore:      cfg.EventStore,
		Transport:       cfg.Transport,
		SimulatorRoutes: cfg.Transport == config.TransportSimulator,
		Broker:          cfg.Broker,
		Logger:          log,

		BrokerTokenSecretFile: cfg.BrokerTokenKey,
	}
	o.Simulator.Seed = uint64(cfg.SimulatorSeed)
	o.Simulator.Default.Latency = cfg.SimulatorLatency
	o.NoPacing = cfg.NoPacing
	o.NoDispatcher = cfg.NoDispatcher
	o.GroupCommit = cfg.GroupCommit
	if cfg.GroupCommit <= 0 {
		o.GroupCommit = -1 // off
	}
	o.NodeID = cfg.NodeID
	o.LeaseTTL = cfg.LeaseTTL
	o.LeaseRenewInterval = cfg.LeaseRenew
	o.LazySessions = cfg.LazySessions
	o.DrainTimeout = cfg.DrainTimeout
	if cfg.DrainTimeout == 0 {
		o.DrainTimeout = -1 // cancel the sends in progress at once
	}
	o.AuditKey = cfg.AuditKey
	o.AuditCheckpointEvery = cfg.AuditCheckpointEvery
	o.AuditCheckpointInterval = cfg.AuditCheckpointInterval
	o.MetricsToken = cfg.MetricsToken
	o.MetricsTenantTop = cfg.MetricsTenantTop
	o.Limits.RatePerSecond, o.Limits.RateBurst = cfg.RateLimit, cfg.RateBurst // 0: no default limit
	o.WebhookEgress = webhooks.EgressConfig{AllowPrivate: cfg.WebhookAllowPrivate, AllowCIDRs: cfg.WebhookAllowPrefixes}
	return o
}

func newMigrateCmd() *cobra.Command {
	return withConfig(&cobra.Command{
		Use:   "migrate",
		Short: "Create or upgrade every schema (event store, read models, keys, webhooks), then exit",
	}, func(c *cobra.Command, cfg *config.Config) error {
		if err := server.Migrate(c.Context(), serverOptions(cfg, newLogger(cfg.LogLevel))); err != nil {
			return err
		}
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
		return serve(c.Context(), cfg, log, c.OutOrStdout())
	})
}

func serve(ctx context.Context, cfg *config.Config, log *slog.Logger, out io.Writer) error {
	o := serverOptions(cfg, log)
	// The first admin key is printed last, after the start-up lines, not buried under them.
	o.BootstrapOut = io.Discard
	node, err := server.New(ctx, o)
	if err != nil {
		return err
	}
	defer node.Close()
	if err := node.Start(ctx); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	// Metrics on their own listener (loopback by default), never on the API's.
	var mln net.Listener
	if cfg.MetricsListen != "" {
		if mln, err = net.Listen("tcp", cfg.MetricsListen); err != nil {
			_ = ln.Close()
			return fmt.Errorf("metrics: listen on %s: %w", cfg.MetricsListen, err)
		}
	}
	srv := &http.Server{Handler: node.Handler, ReadHeaderTimeout: 10 * time.Second}
	srv.RegisterOnShutdown(node.Console.Close) // live-update streams end; Shutdown need not wait
	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(ln) }()
	var msrv *http.Server
	if mln != nil {
		msrv = &http.Server{Handler: node.MetricsHandler, ReadHeaderTimeout: 10 * time.Second}
		go func() { errc <- msrv.Serve(mln) }()
		if cfg.MetricsExposed() {
			log.Warn("metrics listener is reachable beyond loopback without a token; set WAQUEUE_METRICS_TOKEN", "addr", mln.Addr().String())
		}
		log.Info("metrics serving", "addr", "http://"+mln.Addr().String()+"/metrics", "token", cfg.MetricsToken != "")
		fmt.Fprintf(out, "waqueue: metrics on http://%s/metrics\n", mln.Addr())
	}
	transport := cfg.Transport
	if transport == config.TransportSimulator {
		transport = "simulator (SIMULATED WhatsApp: nothing is sent to real numbers)"
	}
	log.Info("waqueue serving", "addr", "http://"+ln.Addr().String(), "db", cfg.Engine(), "transport", transport, "broker", cmpOr(cfg.Broker, "in-process"))
	fmt.Fprintf(out, "waqueue: serving http://%s (store %s, transport %s)\n", ln.Addr(), cfg.Engine(), transport)
	fmt.Fprintf(out, "waqueue: operator console on http://%s/console/ (sign in with an API key)\n", ln.Addr())
	auditPub := node.AuditCheckpoints.PublicKey()
	log.Info("audit checkpoints signed", "key_id", auditchain.KeyID(auditPub), "public_key", auditchain.EncodePublicKey(auditPub),
		"key_file", cfg.AuditKey, "key_created", node.AuditKeyCreated)
	fmt.Fprintf(out, "waqueue: audit checkpoints signed by %s (key file %s); verify with --public-key %s\n",
		auditchain.KeyID(auditPub), cfg.AuditKey, auditchain.EncodePublicKey(auditPub))
	if node.AdminKey != "" {
		fmt.Fprintf(out, "\nwaqueue: created tenant %q and its admin API key, shown this once (also saved to %s):\n\n    %s\n\n",
			apikeys.DefaultTenant, filepath.Join(cfg.DataDir, apikeys.AdminKeyFile), node.AdminKey)
	}
	select {
	case <-ctx.Done():
	case err := <-errc:
		return err
	case err := <-node.Errors():
		log.Error("stopping: a background component failed", "err", err)
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if msrv != nil {
		_ = msrv.Shutdown(shutCtx)
	}
	if err := srv.Shutdown(shutCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func newLogger(level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}

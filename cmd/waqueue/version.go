package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/waqueue/waqueue/cmd/waqueue/internal/config"
	"github.com/waqueue/waqueue/internal/buildinfo"
)

func newVersionCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the build: module version, VCS revision, modified flag, Go version",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			in := buildinfo.Read()
			if asJSON {
				enc := json.NewEncoder(c.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(in)
			}
			_, err := fmt.Fprintln(c.OutOrStdout(), in.String())
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON, as in GET /healthz's \"build\"")
	return cmd
}

// newHealthcheckCmd is the container image's HEALTHCHECK (the image has no curl): it GETs
// /healthz on the address `serve` listens on (--listen, WAQUEUE_LISTEN) and exits 0 only on a
// 200 answer.
func newHealthcheckCmd() *cobra.Command {
	var timeout time.Duration
	cfg := &config.Config{}
	cmd := &cobra.Command{
		Use:   "healthcheck",
		Short: "GET /healthz on the configured listen address; exit 0 when it answers 200 (for container health checks)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			// The same flags and environment as serve, but only the listen address matters:
			// the rest is not validated, so a health check never fails on an unrelated setting.
			if err := config.ApplyEnv(c.Flags(), os.LookupEnv); err != nil {
				return err
			}
			if _, _, err := net.SplitHostPort(cfg.Listen); err != nil {
				return fmt.Errorf("config: WAQUEUE_LISTEN %q: %w", cfg.Listen, err)
			}
			ctx, cancel := context.WithTimeout(c.Context(), timeout)
			defer cancel()
			return healthcheck(ctx, healthURL(cfg.Listen), c.OutOrStdout())
		},
	}
	cfg.Bind(cmd.Flags())
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Second, "give up after this long")
	return cmd
}

// healthURL is the /healthz URL of a server listening on listen. An unspecified host
// (":8080", "0.0.0.0:8080", "[::]:8080") is reached on the loopback address.
func healthURL(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "http://" + listen + "/healthz"
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return "http://" + net.JoinHostPort(host, port) + "/healthz"
}

func healthcheck(ctx context.Context, url string, out io.Writer) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: GET %s: %s %s", url, res.Status, body)
	}
	_, err = fmt.Fprintf(out, "healthy: %s\n", body)
	return err
}

// Command waqueue is the one binary of waqueue: the server (`serve`), its schema (`migrate`),
// operator and auditor tools that talk to a running server over the API, and the benchmarks.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	// The IANA zone database, embedded: a connection's sending-policy time zone must load on any
	// host (a minimal image without /usr/share/zoneinfo included), the same zones everywhere.
	_ "time/tzdata"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRoot()
	if err := root.ExecuteContext(ctx); err != nil {
		if !errors.Is(err, context.Canceled) {
			fmt.Fprintln(os.Stderr, "waqueue:", err)
		}
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "waqueue",
		Short:         "Outgoing WhatsApp message queues with a safe, audited Clear Queue",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newServeCmd(), newMigrateCmd(), newBenchCmd(), newVersionCmd(), newHealthcheckCmd())
	root.AddCommand(clientCommands()...)
	return root
}

package app

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/waqueue/waqueue/cmd/waqueue/internal/config"
)

// Serve runs the server until ctx is done.
func Serve(ctx context.Context, cfg *config.Config, log *slog.Logger, out io.Writer) error {
	st, err := OpenStores(ctx, cfg, func() time.Time { return time.Now().UTC() })
	if err != nil {
		return err
	}
	defer st.Close()
	fmt.Fprintf(out, "waqueue: store open (%s); the HTTP API is not wired yet\n", cfg.Engine())
	<-ctx.Done()
	return nil
}

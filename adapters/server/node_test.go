package server_test

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/waqueue/waqueue/adapters/server"
)

// newNode composes a node with o, as `waqueue serve` does, and closes it when the test ends.
// Left empty in o, the data directory is a fresh one, the logger discards and the first
// admin key is written nowhere (the node has it in AdminKey).
func newNode(ctx context.Context, t *testing.T, o server.Options) *server.Node {
	t.Helper()
	if o.DataDir == "" {
		o.DataDir = t.TempDir()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.BootstrapOut == nil {
		o.BootstrapOut = io.Discard
	}
	n, err := server.New(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// startNode is newNode, then starts the node's background work (read models, dispatcher
// unless o.NoDispatcher) under ctx.
func startNode(ctx context.Context, t *testing.T, o server.Options) *server.Node {
	t.Helper()
	n := newNode(ctx, t, o)
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return n
}

package server_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/waqueue/waqueue/adapters/server"
)

// TestSimulatorRoutesOnlyWithSimulator (issue 11.2): the simulator's ban, lift and logout
// routes exist only with the simulator transport. With whatsmeow configured they are 404 even
// when SimulatorRoutes is set, so no API key can assert a ban, a lift or a logout of a real
// number.
func TestSimulatorRoutesOnlyWithSimulator(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	node, err := server.New(ctx, server.Options{DataDir: t.TempDir(), Transport: server.TransportWhatsmeow,
		SimulatorRoutes: true, NoDispatcher: true, Logger: slog.New(slog.DiscardHandler), BootstrapOut: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	srv := httptest.NewServer(node.Handler)
	defer srv.Close()
	c := &client{t: t, base: srv.URL, key: node.AdminKey}
	c.do("POST", "/v1/connections", map[string]any{"id": "real-1", "phone": "+491701234567"}, nil, http.StatusCreated, nil)
	c.do("POST", "/v1/connections/real-1/simulator/ban", map[string]any{"kind": "permanent"}, nil, http.StatusNotFound, nil)
	c.do("POST", "/v1/connections/real-1/simulator/lift", nil, nil, http.StatusNotFound, nil)
	c.do("POST", "/v1/connections/real-1/simulator/logout", nil, nil, http.StatusNotFound, nil)
}

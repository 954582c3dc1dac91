package server_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/server"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/internal/testwait"
)

// TestSimulatorRoutesOnlyWithSimulator (issue 11.2): the simulator's ban, lift and logout
// routes exist only with the simulator transport. With whatsmeow configured they are 404 even
// when SimulatorRoutes is set, so no API key can assert a ban, a lift or a logout of a real
// number.
func TestSimulatorRoutesOnlyWithSimulator(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testwait.AtLeast(2*time.Minute))
	defer cancel()
	node := newNode(ctx, t, server.Options{Transport: server.TransportWhatsmeow, SimulatorRoutes: true, NoDispatcher: true})
	srv := httptest.NewServer(node.Handler)
	defer srv.Close()
	c := &client{t: t, base: srv.URL, key: node.AdminKey}
	c.do("POST", "/v1/connections", map[string]any{"id": "real-1", "phone": "+491701234567"}, nil, http.StatusCreated, nil)
	c.do("POST", "/v1/connections/real-1/simulator/ban", map[string]any{"kind": "permanent"}, nil, http.StatusNotFound, nil)
	c.do("POST", "/v1/connections/real-1/simulator/lift", nil, nil, http.StatusNotFound, nil)
	c.do("POST", "/v1/connections/real-1/simulator/logout", nil, nil, http.StatusNotFound, nil)
}

// TestSimulatorRoutesActThroughTheSimulator (issue 11.2): in simulator mode the ban and lift
// routes act on the simulator, which reports them like WhatsApp would; the node's own
// dispatcher records them as the system principal, never as the calling key.
func TestSimulatorRoutesActThroughTheSimulator(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testwait.AtLeast(2*time.Minute))
	defer cancel()
	node := startNode(ctx, t, server.Options{SimulatorRoutes: true, NoPacing: true})
	srv := httptest.NewServer(node.Handler)
	defer srv.Close()
	c := &client{t: t, base: srv.URL, key: node.AdminKey}
	c.do("POST", "/v1/connections", map[string]any{"id": "sim-1", "phone": "+491701234567"}, nil, http.StatusCreated, nil)
	card := func(field string) any {
		var m map[string]any
		c.do("GET", "/v1/connections/sim-1", nil, nil, 200, &m)
		return m[field]
	}
	waitFor(t, ctx, "connection active", func() bool { return card("link_status") == "active" })
	c.do("POST", "/v1/connections/sim-1/simulator/ban", map[string]any{"kind": "temporary", "expires_in": "1h"}, nil, 200, nil)
	waitFor(t, ctx, "banned", func() bool { return card("link_status") == "banned" })
	c.do("POST", "/v1/connections/sim-1/simulator/lift", nil, nil, 200, nil)
	waitFor(t, ctx, "lifted", func() bool { return card("link_status") == "active" })
	evs, err := node.Events.ReadStream(ctx, connection.StreamName("sim-1"), eventstore.Forwards, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, e := range evs {
		if e.Type == connection.TypeConnectionBanned || e.Type == connection.TypeBanLifted {
			seen++
			if e.Metadata.Actor != connection.SystemActor {
				t.Errorf("%s recorded as %q, want the system actor", e.Type, e.Metadata.Actor)
			}
		}
	}
	if seen != 2 {
		t.Fatalf("%d ban/lift events, want 2", seen)
	}
}

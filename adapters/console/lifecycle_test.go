package console_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/waqueue/waqueue/adapters/transport"
	"github.com/waqueue/waqueue/domain/connection"
)

// TestLogoutPairAgainRetireOnAFullNode runs the lifecycle on the composition `waqueue serve`
// runs (dispatcher on, simulator): a logout through the API, pairing again by QR code (the
// dispatcher records the pairing), a retirement with clear_first; the console's card says
// "Logged out by an operator", then "Retired", and the dispatcher releases the session.
func TestLogoutPairAgainRetireOnAFullNode(t *testing.T) {
	node, base := startNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), safety)
	defer cancel()
	api := apiClient{t: t, base: base, key: node.AdminKey}
	const phone = "+491701234567"
	api.do("POST", "/v1/connections", map[string]any{"id": "shop-1", "phone": phone}, nil, http.StatusCreated, nil)
	api.waitCard(ctx, "shop-1", "link_status", "active")
	key := connection.Key(node.Tenant, "shop-1")

	api.do("POST", "/v1/connections/shop-1/logout", nil, nil, 200, nil)
	api.waitCard(ctx, "shop-1", "link_status", "session_invalid")
	b := newBrowser(t, base)
	b.signIn(node.AdminKey)
	consoleShows(t, ctx, b, "/console/connections/shop-1", "Logged out by an operator")

	api.do("POST", "/v1/connections/shop-1/pairing/qr", nil, nil, 200, nil)
	api.waitCard(ctx, "shop-1", "link_status", "active")
	if st := node.Simulator.Status(key); st.State != transport.StateConnected {
		t.Fatalf("simulator after pairing again: %+v", st)
	}

	var retiring map[string]any
	api.do("POST", "/v1/connections/shop-1/retire", map[string]any{"reason": "number sold", "confirm": phone, "clear_first": true},
		map[string]string{"Idempotency-Key": "retire-1"}, http.StatusAccepted, &retiring)
	// The clearing process is off in startNode: sweep until the clear (read models permitting)
	// completes and retires the connection.
	for {
		if _, err := node.Clears.Sweep(ctx); err != nil {
			t.Fatal(err)
		}
		var card map[string]any
		api.do("GET", "/v1/connections/shop-1", nil, nil, 200, &card)
		if card["link_status"] == "retired" {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("not retired: %v", card)
		case <-time.After(20 * time.Millisecond):
		}
	}
	consoleShows(t, ctx, b, "/console/connections", "Retired")
	for node.Simulator.Status(key).State != transport.StateDisconnected {
		select {
		case <-ctx.Done():
			t.Fatalf("the dispatcher kept the retired connection's session: %+v", node.Simulator.Status(key))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// consoleShows waits until the console page path answers 200 with want in it. The API call the
// test waited on read the cards read model only; the connection page also reads the queue read
// model, which may not have applied the registration yet (a 404 meanwhile).
func consoleShows(t *testing.T, ctx context.Context, b *browser, path, want string) {
	t.Helper()
	for {
		p := b.do("GET", path, nil, nil)
		if p.status == http.StatusOK && strings.Contains(p.body, want) {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("GET %s never showed %q: %d %.2000s", path, want, p.status, p.body)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

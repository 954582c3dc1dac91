package projections_test

import (
	"context"
	"testing"

	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/projections"
)

// TestCardExplainsBanAndLogout: the card says why a connection is banned or logged out, as a
// stable code and in words, beside the transport's raw code; pairing again clears the logout.
func TestCardExplainsBanAndLogout(t *testing.T) {
	eachEngine(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		do := registerA(t, e, "system")
		cards := projections.NewCards()
		r := startRunner(t, e, cards)
		card := func() projections.Card {
			t.Helper()
			r.waitFor(t, e, cards)
			c, err := cards.Card(ctx, e.db, tenantA, connA)
			if err != nil {
				t.Fatal(err)
			}
			return c
		}
		do(func(c *connection.Connection) ([]connection.Event, error) {
			return c.Pair(connection.PairSession{Actor: "system"}, at(0))
		})
		do(func(c *connection.Connection) ([]connection.Event, error) {
			return c.Ban(connection.BanConnection{Kind: connection.BanTemporary, ExpiresAt: at(60), ReasonCode: "102", Actor: "system"}, at(1))
		})
		if c := card(); c.Ban == nil || c.Ban.Reason != "102" || c.Ban.Explained.Code != connection.ReasonBlockedByUsers ||
			c.Ban.Explained.Description == "" || c.Logout != nil {
			t.Fatalf("banned card = %+v (ban %+v)", c, c.Ban)
		}
		do(func(c *connection.Connection) ([]connection.Event, error) {
			return c.LiftBan(connection.LiftBan{Actor: "system"}, at(2))
		})
		do(func(c *connection.Connection) ([]connection.Event, error) {
			return c.InvalidateSession(connection.InvalidateSession{Reason: "401", Actor: "system"}, at(3))
		})
		if c := card(); c.Ban != nil || c.Logout == nil || c.Logout.Reason != "401" || c.Logout.Explained.Code != connection.ReasonLoggedOut {
			t.Fatalf("logged-out card = %+v (logout %+v)", c, c.Logout)
		}
		do(func(c *connection.Connection) ([]connection.Event, error) {
			return c.Pair(connection.PairSession{Actor: "system"}, at(4))
		})
		if c := card(); c.Logout != nil {
			t.Fatalf("paired again, the card still shows a logout: %+v", c.Logout)
		}
	})
}

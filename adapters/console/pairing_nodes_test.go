package console_test

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/waqueue/waqueue/adapters/httpapi/apitest"
	"github.com/waqueue/waqueue/adapters/pgcluster/pgtest"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/internal/testwait"
)

var svgRE = regexp.MustCompile(`(?s)<svg xmlns="http://www.w3.org/2000/svg".*?</svg>`)

// TestQRPairingPageOnAnyNode: two nodes on one PostgreSQL, as behind a load balancer. The
// console's pairing page on node a starts a QR pairing; its poll (the page's fragment) answered
// by node b shows the same code and starts no second pairing; the API on b answers the same
// code. Before the pairing state was shared, b started a second pairing with other codes.
func TestQRPairingPageOnAnyNode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testwait.AtLeast(5*time.Minute))
	defer cancel()
	url := pgtest.URL(t)
	a := apitest.Start(t, apitest.Options{DB: url})
	b := apitest.Start(t, apitest.Options{DB: url})
	register(t, ctx, a, "shop-1", "+491701234567")
	if err := b.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	key := connection.Key(a.Tenant, "shop-1")
	a.Simulator.HoldQR(key)
	b.Simulator.HoldQR(key)

	onA := newBrowser(t, a.URL)
	onA.signIn(a.AdminKey)
	onB := onA.on(b.URL)
	pa := onA.do("GET", "/console/connections/shop-1/pairing", nil, nil)
	svgA := svgRE.FindString(pa.body)
	if pa.status != 200 || svgA == "" {
		t.Fatalf("pairing page on a: %d, no QR code: %.400s", pa.status, pa.body)
	}
	pb := onB.do("GET", "/console/connections/shop-1/pairing?fragment=1", nil, nil)
	if svgB := svgRE.FindString(pb.body); pb.status != 200 || svgB != svgA {
		t.Fatalf("poll on b: %d, its QR code differs from a's (%d vs %d bytes)", pb.status, len(svgB), len(svgA))
	}
	if na, nb := a.Simulator.QRPairings(key), b.Simulator.QRPairings(key); na != 1 || nb != 0 {
		t.Fatalf("PairQR calls: a %d, b %d; want 1, 0", na, nb)
	}
	res, err := b.Do(ctx, a.AdminKey, "GET", "/v1/connections/shop-1/pairing/qr", nil, map[string]string{"Accept": "text/plain"})
	if err != nil || res.Status != 200 || !strings.HasPrefix(string(res.Body), "SIMULATED-QR,"+key+",") {
		t.Fatalf("API on b: %v %d %q", err, res.Status, res.Body)
	}
}

package httpapi_test

import (
	"strings"
	"testing"

	"github.com/waqueue/waqueue/adapters/httpapi/apitest"
	"github.com/waqueue/waqueue/adapters/pgcluster/pgtest"
	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
)

// TestQRPairingOnAnyNode runs two API servers on one PostgreSQL, as behind a load balancer: a QR
// pairing started through node a is read through node b (the same code, and the rotated one),
// a POST through b joins it (no second PairQR on either node), another tenant learns nothing
// of it, and once it ended neither node answers a code. Before the pairing state was shared,
// b answered 404 no_pairing and a POST there started a second pairing.
func TestQRPairingOnAnyNode(t *testing.T) {
	url := pgtest.URL(t)
	a := start(t, apitest.Options{DB: url})
	b := start(t, apitest.Options{DB: url})
	op := a.key(a.Tenant, auth.RoleOperator) // keys live in the shared database: b knows them
	id, _ := a.register(op)
	b.sync()
	key := connection.Key(a.Tenant, id)
	a.Simulator.HoldQR(key)
	b.Simulator.HoldQR(key)
	path := "/v1/connections/" + id + "/pairing/qr"

	wantProblem(t, b.do(op, "GET", path, nil, nil), 404, "no_pairing")
	started := a.do(op, "POST", path, nil, nil)
	wantStatus(t, started, 200)
	code := str(started.Map(), "code")
	if code == "" || started.Map()["running"] != true {
		t.Fatalf("POST on a: %s", started.Body)
	}

	// Read through b: the same code, in every rendering.
	got := b.do(op, "GET", path, nil, nil)
	wantStatus(t, got, 200)
	if m := got.Map(); str(m, "code") != code || m["running"] != true || str(m, "connection_id") != id {
		t.Fatalf("GET on b: %s, want code %q", got.Body, code)
	}
	txt := b.do(op, "GET", path, nil, map[string]string{"Accept": "text/plain"})
	wantStatus(t, txt, 200)
	if strings.TrimSpace(string(txt.Body)) != code {
		t.Fatalf("text QR on b %q, want %q", txt.Body, code)
	}

	// POST through b joins a's pairing.
	joined := b.do(op, "POST", path, nil, nil)
	wantStatus(t, joined, 200)
	if str(joined.Map(), "code") != code {
		t.Fatalf("POST on b: %s, want a's code %q", joined.Body, code)
	}
	if na, nb := a.Simulator.QRPairings(key), b.Simulator.QRPairings(key); na != 1 || nb != 0 {
		t.Fatalf("PairQR calls: a %d, b %d; want 1, 0", na, nb)
	}

	// Another tenant learns nothing of the connection or its pairing, on either node.
	other := a.key(otherTenant, auth.RoleAdmin)
	for _, e := range []*env{a, b} {
		wantProblem(t, e.do(other, "GET", path, nil, nil), 404, "not_found")
		wantProblem(t, e.do(other, "POST", path, nil, nil), 404, "not_found")
	}

	// WhatsApp rotates the code: b answers the new one.
	next, err := a.Simulator.RotateQR(key)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b answers the rotated code", func() bool {
		r := b.do(op, "GET", path, nil, nil)
		return r.Status == 200 && str(r.Map(), "code") == next
	})

	// Scanned: the pairing ends; neither node answers a code.
	if err := a.Simulator.ScanQR(key); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the pairing ended on a", func() bool { return a.do(op, "GET", path, nil, nil).Status == 404 })
	wantProblem(t, b.do(op, "GET", path, nil, nil), 404, "no_pairing")
	wantProblem(t, a.do(op, "GET", path, nil, nil), 404, "no_pairing")
}

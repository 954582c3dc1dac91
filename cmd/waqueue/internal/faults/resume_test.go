//go:build faults

package faults

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/internal/testwait"
)

// TestResumeDuringBan: an operator resumes a queue held by a ban while the ban is still on, then
// the ban lifts. G7 says that when a ban lifts nothing is sent until an operator resumes or clears;
// domain/invariants reads that as "no MessageDispatched after BanLifted before a QueueResumed (or
// a clear) that follows it". The load test found the node dispatching right after the lift.
// This test reproduces it deterministically; it fails until the domain (refuse a resume while
// banned, or hold again at the lift) and the checker agree.
func TestResumeDuringBan(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testwait.AtLeast(2*time.Minute))
	defer cancel()
	n := startNode(t, ctx, "")
	a := n.api
	const id = "resume-1"
	a.register(t, ctx, id, "+491701000009")
	a.must(t, ctx, "POST", "/v1/connections/"+id+"/simulator/ban", map[string]any{"kind": "temporary", "expires_in": "1h"}, nil, http.StatusOK, nil)
	waitFor(t, ctx, "held by the ban", func() bool { c := a.card(t, ctx, id); return c.LinkStatus == "banned" && c.QueueStatus == "held" })
	for i := range 5 {
		a.must(t, ctx, "POST", "/v1/connections/"+id+"/messages", map[string]any{"recipient": fmt.Sprintf("+49170800000%d", i), "text": "hi"},
			map[string]string{"Idempotency-Key": fmt.Sprint("k", i)}, http.StatusAccepted, nil)
	}
	res, err := a.call(ctx, "POST", "/v1/connections/"+id+"/queue/resume", map[string]any{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("resume during the ban: %d %s", res.Status, res.Body)
	a.must(t, ctx, "POST", "/v1/connections/"+id+"/simulator/lift", nil, nil, http.StatusOK, nil)
	waitFor(t, ctx, "ban lifted", func() bool { return a.card(t, ctx, id).LinkStatus == "active" })
	time.Sleep(2 * time.Second) // give a dispatcher that should stay quiet time to misbehave
	h := a.history(t, ctx, id)
	check(t, id, h, n.sends(id))
	if got := count(h, connection.TypeMessageDispatched); got != 0 {
		t.Errorf("%d messages dispatched after the lift with no resume after it", got)
	}
}

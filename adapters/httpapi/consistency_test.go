package httpapi_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/waqueue/waqueue/adapters/httpapi"
	"github.com/waqueue/waqueue/adapters/httpapi/apitest"
	"github.com/waqueue/waqueue/domain/auth"
)

// TestReadYourWritesExplicit: a command answers once durable with Waqueue-Position, and a read
// sending it back as Waqueue-Min-Position always shows the write (concurrent writers, each reading
// its own writes at once), with Waqueue-Position-Reached: true — also when the read's read model
// does not select the written event (the audit log and a message enqueue). The wait bound is
// ten minutes here, so a read that waited for its bound instead of deciding would fail the test's
// own timeout.
func TestReadYourWritesExplicit(t *testing.T) {
	e := start(t, apitest.Options{Limits: httpapi.Limits{ReadYourWrites: 10 * time.Minute}})
	op := e.key(e.Tenant, auth.RoleOperator)
	sender := e.key(e.Tenant, auth.RoleSender)
	auditor := e.key(e.Tenant, auth.RoleAdmin)
	id, _ := e.register(op)
	noAuto := map[string]string{httpapi.HeaderMinPosition: ""} // this test sends positions itself

	const writers, each = 6, 5
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				r, err := e.Do(e.ctx, sender, "POST", "/v1/connections/"+id+"/messages",
					map[string]any{"recipient": newPhone(), "text": fmt.Sprintf("w%d-%d", w, i)}, noAuto)
				if err != nil || r.Status != 202 {
					errs <- fmt.Errorf("enqueue: %v %v", err, r)
					return
				}
				pos := r.Header.Get(httpapi.HeaderPosition)
				if _, ok := httpapi.ParsePosition(pos); !ok {
					errs <- fmt.Errorf("enqueue answered Waqueue-Position %q", pos)
					return
				}
				for _, path := range []string{r.Header.Get("Location"), "/v1/audit"} {
					key := sender
					if path == "/v1/audit" {
						key = auditor
					}
					g, err := e.Do(e.ctx, key, "GET", path, nil, map[string]string{httpapi.HeaderMinPosition: pos})
					if err != nil || g.Status != 200 || g.Header.Get(httpapi.HeaderPositionReached) != "true" {
						errs <- fmt.Errorf("GET %s at %s: %v %+v", path, pos, err, g)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// The query parameter works alike; a malformed position is a problem.
	r := e.do(sender, "POST", "/v1/connections/"+id+"/messages", map[string]any{"recipient": newPhone(), "text": "q"}, noAuto)
	wantStatus(t, r, 202)
	q := e.do(op, "GET", "/v1/connections/"+id+"/queue?min_position="+r.Header.Get(httpapi.HeaderPosition), nil, noAuto)
	wantStatus(t, q, 200)
	if q.Header.Get(httpapi.HeaderPositionReached) != "true" || num(q.Map(), "pending") != writers*each+1 {
		t.Fatalf("queue at the last write: %s (reached %q), want %d pending", q.Body, q.Header.Get(httpapi.HeaderPositionReached), writers*each+1)
	}
	wantProblem(t, e.do(op, "GET", "/v1/connections/"+id, nil, map[string]string{httpapi.HeaderMinPosition: "12"}), 400, "invalid_request")
	wantProblem(t, e.do(op, "GET", "/v1/connections/"+id+"?min_position=a/b", nil, noAuto), 400, "invalid_request")
	// Without the header a read neither waits nor says anything about positions.
	if g := e.do(op, "GET", "/v1/connections/"+id, nil, noAuto); g.Header.Get(httpapi.HeaderPositionReached) != "" {
		t.Fatalf("read without Waqueue-Min-Position answered Waqueue-Position-Reached %q", g.Header.Get(httpapi.HeaderPositionReached))
	}
}

// TestMinPositionNotReached: a position the read models cannot reach within the bound is answered
// with what they hold (200) and Waqueue-Position-Reached: false, never an error.
func TestMinPositionNotReached(t *testing.T) {
	e := start(t, apitest.Options{Limits: httpapi.Limits{ReadYourWrites: time.Millisecond}})
	op := e.key(e.Tenant, auth.RoleOperator)
	id, _ := e.register(op)
	g := e.do(op, "GET", "/v1/connections/"+id, nil, map[string]string{httpapi.HeaderMinPosition: "18446744073709551615/0"})
	wantStatus(t, g, 200)
	if g.Header.Get(httpapi.HeaderPositionReached) != "false" {
		t.Fatalf("unreachable position: Waqueue-Position-Reached %q, want false", g.Header.Get(httpapi.HeaderPositionReached))
	}
}

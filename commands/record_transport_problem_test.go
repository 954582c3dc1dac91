package commands

import (
	"errors"
	"reflect"
	"testing"

	"github.com/waqueue/waqueue/domain/connection"
)

func TestRecordTransportProblem(t *testing.T) {
	for _, s := range stores {
		t.Run(s.name, func(t *testing.T) {
			ctx := testCtx(t)
			store := s.open(t)
			h := newHandlers(t, store, RepositoryOptions{}, (&fixedClock{now: t0}).Now)
			h.registerActive(t, ctx, "c-1")
			if _, err := h.hold.Handle(as(ctx, operator), HoldQueue{ConnectionID: "c-1", Note: "n"}); err != nil {
				t.Fatal(err)
			}
			before, _ := history(t, ctx, store, "c-1")

			cmd := RecordTransportProblem{ConnectionID: "c-1", Kind: connection.ProblemKeepAliveTimeout, Reason: "ping", Detail: "no pong in 20s"}
			res, err := h.problem.Handle(as(ctx, system), cmd)
			if err != nil {
				t.Fatal(err)
			}
			after, recs := history(t, ctx, store, "c-1")
			if len(after) != len(before)+1 {
				t.Fatalf("recorded %d events, want 1", len(after)-len(before))
			}
			want := connection.TransportProblemObserved{Kind: connection.ProblemKeepAliveTimeout, Reason: "ping", Detail: "no pong in 20s", ObservedAt: t0}
			if got := after[len(after)-1].Event; !reflect.DeepEqual(got, want) {
				t.Fatalf("event = %#v, want %#v", got, want)
			}
			if last := recs[len(recs)-1]; last.Metadata.Actor != system.ID || last.Metadata.TenantID != tenant {
				t.Fatalf("metadata = %+v", last.Metadata)
			}
			if res.Position.IsZero() {
				t.Fatalf("result = %+v, want the appended event's position", res)
			}
			err = h.repo.View(ctx, connection.Key(tenant, "c-1"), func(c *connection.Connection) error {
				if c.LinkStatus() != connection.LinkStatusActive || c.QueueStatus() != connection.QueueStatusHeld {
					t.Errorf("after the observation: link %v queue %v, want active/held", c.LinkStatus(), c.QueueStatus())
				}
				if c.Version() != res.Version {
					t.Errorf("result version %d, aggregate version %d", res.Version, c.Version())
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}

			// An invalid kind writes nothing; an unknown connection is not found.
			_, err = h.problem.Handle(as(ctx, system), RecordTransportProblem{ConnectionID: "c-1"})
			if !errors.Is(err, connection.ErrInvalidCommand) {
				t.Fatalf("zero kind: err = %v, want ErrInvalidCommand", err)
			}
			if n := streamLen(t, ctx, store, "c-1"); n != len(after) {
				t.Fatalf("a refused problem wrote %d events", n-len(after))
			}
			_, err = h.problem.Handle(as(ctx, system), RecordTransportProblem{ConnectionID: "c-missing", Kind: connection.ProblemConnectFailure})
			var nf *NotFoundError
			if !errors.As(err, &nf) || nf.ConnectionID != "c-missing" {
				t.Fatalf("unknown connection: err = %v, want *NotFoundError", err)
			}
		})
	}
}

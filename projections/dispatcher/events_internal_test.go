package dispatcher

import (
	"context"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/eventstore/sqlite"
	"github.com/waqueue/waqueue/adapters/simulator"
	"github.com/waqueue/waqueue/adapters/transport"
	"github.com/waqueue/waqueue/adapters/transport/transporttest"
	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/projections"
)

// Connection problems are recorded as TransportProblemObserved (a keep-alive streak once); a
// receipt for a message nobody can place is ignored; an event for a connection the store does
// not know is refused; none of them is an error.
func TestEventsWithoutLinkChange(t *testing.T) {
	ctx := context.Background()
	x := newInternal(t)
	store, d, promReg := x.store, x.d, x.reg
	h := transport.EventHeader{ConnectionID: connection.Key("t1", "c1"), At: time.Now()}
	lastPing := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, e := range []transport.Event{
		transport.StreamReplaced{EventHeader: h},
		transport.ClientOutdated{EventHeader: h},
		transport.KeepAliveTimeout{EventHeader: h, ErrorCount: 1, LastSuccess: lastPing},
		transport.KeepAliveTimeout{EventHeader: h, ErrorCount: 3, LastSuccess: lastPing}, // same streak: not recorded again
		transport.ConnectFailure{EventHeader: h, Reason: 500, Message: strings.Repeat("é", connection.MaxNoteLen)},
		transport.StreamReplaced{EventHeader: transport.EventHeader{ConnectionID: "nobody"}},
		transport.Receipt{EventHeader: h, Kind: transport.ReceiptDelivered, MessageIDs: []uuid.UUID{uuid.New()}},
		transport.BanLifted{EventHeader: h}, // the link was never banned: refused
		transport.Paired{EventHeader: transport.EventHeader{ConnectionID: "nobody"}},
	} {
		d.handleEvent(e)
	}
	for _, c := range []struct {
		typ, result string
		n           float64
	}{
		{"stream_replaced", eventRecorded, 1}, {"stream_replaced", eventRefused, 1}, {"client_outdated", eventRecorded, 1},
		{"keepalive_timeout", eventRecorded, 1}, {"keepalive_timeout", eventIgnored, 1}, {"connect_failure", eventRecorded, 1},
		{"receipt_delivered", eventIgnored, 1}, {"ban_lifted", eventRefused, 1}, {"paired", eventRefused, 1},
	} {
		if got := counterValue(t, promReg, "waqueue_dispatcher_transport_events_total", c.typ, c.result); got != c.n {
			t.Errorf("%s/%s counted %v, want %v", c.typ, c.result, got, c.n)
		}
	}
	recs, err := store.ReadStream(ctx, connection.StreamName(connection.Key("t1", "c1")), eventstore.Forwards, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []connection.TransportProblemObserved
	for _, r := range recs {
		if r.Type != connection.TypeTransportProblemObserved {
			continue
		}
		e, err := connection.Decode(r.Type, r.Data)
		if err != nil {
			t.Fatal(err)
		}
		p := e.(connection.TransportProblemObserved)
		if p.ObservedAt.IsZero() || r.Metadata.Actor != commands.SystemPrincipal("t1").ID {
			t.Fatalf("problem %+v recorded at %v by %q", p, p.ObservedAt, r.Metadata.Actor)
		}
		p.ObservedAt = time.Time{}
		got = append(got, p)
	}
	clipped := strings.Repeat("é", connection.MaxNoteLen/2)
	want := []connection.TransportProblemObserved{
		{Kind: connection.ProblemStreamReplaced, Detail: "another client took over the session"},
		{Kind: connection.ProblemClientOutdated, Reason: "405", Detail: "WhatsApp refuses this client version"},
		{Kind: connection.ProblemKeepAliveTimeout, Detail: "keepalive pings failing; last success 2030-01-02T03:04:05Z"},
		{Kind: connection.ProblemConnectFailure, Reason: "500", Detail: clipped},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("recorded problems:\n got %+v\nwant %+v", got, want)
	}
	if got := counterValue(t, promReg, "waqueue_dispatcher_transport_events_total", "ban_lifted", eventError); got != 0 {
		t.Errorf("a refused lift counted as an error")
	}
}

// internal is a dispatcher (not running: the test hands it events) on a fresh SQLite store
// with tenant t1's connection c1 registered, the simulator as transport and a metrics
// registry of its own.
type internal struct {
	op    context.Context // t1's admin
	store eventstore.Store
	repo  *commands.Repository
	d     *Dispatcher
	reg   *prometheus.Registry
}

func newInternal(t *testing.T) internal {
	t.Helper()
	ctx := context.Background()
	store, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "w.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	repo, err := commands.NewRepository(store, commands.RepositoryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := commands.NewRegisterConnectionHandler(repo, commands.SystemClock)
	if err != nil {
		t.Fatal(err)
	}
	op := commands.WithPrincipal(ctx, auth.Principal{TenantID: "t1", ID: "op", Role: auth.RoleAdmin})
	if _, err := reg.Handle(op, commands.RegisterConnection{ConnectionID: "c1", Phone: "+4915112345678"}); err != nil {
		t.Fatal(err)
	}
	sim := simulator.New(simulator.Options{})
	t.Cleanup(sim.Close)
	promReg := prometheus.NewRegistry()
	d, err := New(Config{Store: store, Repository: repo, Messages: QueueMessages{Queue: projections.NewQueue()},
		Transport: sim, Registerer: promReg})
	if err != nil {
		t.Fatal(err)
	}
	d.ctx = ctx
	return internal{op: op, store: store, repo: repo, d: d, reg: promReg}
}

// counterValue returns the value of the counter name{type, result} gathered from reg (0 if absent).
func counterValue(t *testing.T, reg *prometheus.Registry, name, typ, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["type"] == typ && labels["result"] == result {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// The next hand-over is the last one plus the policy's interval plus the drawn fraction of its
// jitter: within [interval, interval+jitter], and a changed policy applies to it at once.
func TestNextAt(t *testing.T) {
	d := &Dispatcher{cfg: Config{Clock: transporttest.NewManualClock(time.Date(2030, 1, 2, 0, 0, 0, 0, time.UTC))}, rng: newRand(1)}
	st := &connState{paceState: &paceState{}}
	p := pacing{policy: connection.SendingPolicy{MinInterval: time.Second, Jitter: 500 * time.Millisecond}}
	if !st.nextAt(p).IsZero() {
		t.Fatal("nextAt before any hand-over is not zero")
	}
	for range 1000 {
		d.paceAfter(st, d.cfg.Clock.Now())
		if iv := st.nextAt(p).Sub(st.lastAt); iv < time.Second || iv > 1500*time.Millisecond {
			t.Fatalf("interval %s outside [1s, 1.5s]", iv)
		}
	}
	p.policy.MinInterval, p.policy.Jitter = time.Hour, 0
	if iv := st.nextAt(p).Sub(st.lastAt); iv != time.Hour {
		t.Fatalf("interval after a policy change %s, want 1h", iv)
	}
	if !st.nextAt(pacing{unpaced: true}).IsZero() {
		t.Error("unpaced nextAt is not zero")
	}
}

func TestClip(t *testing.T) {
	for _, c := range []struct {
		in   string
		n    int
		want string
	}{
		{"abc", 5, "abc"}, {"abcdef", 3, "abc"}, {"aé", 2, "a"}, {"aé", 3, "aé"}, {"a\xffb", 10, "a\uFFFDb"}, {"", 0, ""},
	} {
		if got := clip(c.in, c.n); got != c.want {
			t.Errorf("clip(%q, %d) = %q, want %q", c.in, c.n, got, c.want)
		}
	}
}

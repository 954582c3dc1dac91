//go:build faults

package faults

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/waqueue/waqueue/adapters/eventstore/esdb/esdbtest"
	"github.com/waqueue/waqueue/adapters/lease"
	"github.com/waqueue/waqueue/adapters/pgcluster/pgtest"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/projections/dispatcher"
)

// multiNodeConnections is how many connections the multi-node test registers: 1,000, as issue
// 15.4 asks (about 2 min for PostgreSQL and 6 for EventStoreDB + NATS on a busy 2-core machine
// that runs four waqueue processes, the engines and the test); WAQUEUE_FAULTS_CONNECTIONS
// overrides it (150 for a quicker run).
func multiNodeConnections(t *testing.T) int {
	if v := os.Getenv("WAQUEUE_FAULTS_CONNECTIONS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 10 {
			t.Fatalf("WAQUEUE_FAULTS_CONNECTIONS=%q: want a number of at least 10", v)
		}
		return n
	}
	return 1000
}

// Messages per connection of the first broadcast (during which a node is killed) and of the
// second (after a node was restarted and a fourth added).
const wave1, wave2 = 4, 3

// leaseRow is one connection's lease as the engine holds it.
type leaseRow struct {
	Owner   string
	Epoch   uint64
	Expires time.Time // the engine's expiry (released leases: the release time)
}

// leaseReader reads every lease of the default tenant, by connection id, straight from the
// engine that holds them.
type leaseReader func(ctx context.Context) (map[string]leaseRow, error)

func pgLeases(t *testing.T, url string) leaseReader {
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return func(ctx context.Context) (map[string]leaseRow, error) {
		// A lease is valid while its owner's session is (released leases: no session, expired).
		rows, err := db.QueryContext(ctx, `SELECT l.connection_id, l.owner, l.epoch, COALESCE(n.expires_at, 'epoch'::timestamptz)
  FROM dispatch_leases l LEFT JOIN dispatch_nodes n ON n.session = l.session WHERE l.tenant_id = 'default'`)
		if err != nil {
			if strings.Contains(err.Error(), "does not exist") {
				return nil, nil // no node created the table yet
			}
			return nil, err
		}
		defer rows.Close()
		out := map[string]leaseRow{}
		for rows.Next() {
			var id string
			var r leaseRow
			var epoch int64
			if err := rows.Scan(&id, &r.Owner, &epoch, &r.Expires); err != nil {
				return nil, err
			}
			r.Epoch = uint64(epoch)
			out[id] = r
		}
		return out, rows.Err()
	}
}

func natsLeases(t *testing.T, url string) leaseReader {
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return func(ctx context.Context) (map[string]leaseRow, error) {
		kv, err := js.KeyValue(ctx, lease.DefaultBucket)
		if err != nil {
			return nil, nil // no node created the bucket yet
		}
		lister, err := kv.ListKeysFiltered(ctx, "l.>")
		if err != nil {
			return nil, err
		}
		var keys []string
		for k := range lister.Keys() {
			keys = append(keys, k)
		}
		out := map[string]leaseRow{}
		// A lease is valid while its owner's session is: the session key names it, is not ended,
		// and was written less than its TTL ago (released leases: expired at the release).
		type session struct {
			ID       string `json:"session"`
			TTLMicro int64  `json:"ttl_us"`
			Ended    bool   `json:"ended"`
		}
		sessions := map[string]jetstream.KeyValueEntry{} // nil: no session key
		sessionExpiry := func(owner, id string) (time.Time, error) {
			e, ok := sessions[owner]
			if !ok {
				got, err := kv.Get(ctx, "n."+base64.RawURLEncoding.EncodeToString([]byte(owner)))
				if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
					return time.Time{}, err
				}
				e = got
				sessions[owner] = e
			}
			if e == nil {
				return time.Time{}, nil
			}
			var s session
			if err := json.Unmarshal(e.Value(), &s); err != nil {
				return time.Time{}, err
			}
			switch {
			case s.ID != id:
				return time.Time{}, nil
			case s.Ended:
				return e.Created(), nil
			}
			return e.Created().Add(time.Duration(s.TTLMicro) * time.Microsecond), nil
		}
		for _, k := range keys {
			parts := strings.Split(k, ".")
			tenant, _ := base64.RawURLEncoding.DecodeString(parts[1])
			id, _ := base64.RawURLEncoding.DecodeString(parts[2])
			if string(tenant) != "default" {
				continue
			}
			e, err := kv.Get(ctx, k)
			if err != nil {
				return nil, err
			}
			var v struct {
				Owner    string `json:"owner"`
				Session  string `json:"session"`
				Epoch    uint64 `json:"epoch"`
				Released bool   `json:"released"`
			}
			if err := json.Unmarshal(e.Value(), &v); err != nil {
				return nil, err
			}
			r := leaseRow{Owner: v.Owner, Epoch: v.Epoch, Expires: e.Created()}
			if !v.Released && v.Session != "" {
				if r.Expires, err = sessionExpiry(v.Owner, v.Session); err != nil {
					return nil, err
				}
			}
			out[string(id)] = r
		}
		return out, nil
	}
}

// startNATS runs a NATS server with JetStream in this process.
func startNATS(t *testing.T) string {
	t.Helper()
	s, err := natsserver.NewServer(&natsserver.Options{
		Host: "127.0.0.1", Port: natsserver.RANDOM_PORT, JetStream: true, StoreDir: t.TempDir(), NoSigs: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s.ClientURL()
}

// cluster runs `waqueue serve` processes sharing their stores.
type cluster struct {
	t      *testing.T
	bin    string
	shared string   // broker token and audit key files, the same for every node
	args   []string // store flags
	key    string   // the admin key, created by the first node
	nodes  map[string]*proc
}

// start starts node id with a data directory of its own and waits until it is ready.
func (c *cluster) start(ctx context.Context, id string) *proc {
	t := c.t
	t.Helper()
	addr := freeAddr(t)
	dir := t.TempDir()
	// --rate-limit 0: the nodes share the tenant's rate-limit bucket, and the test's bursts of
	// requests (a thousand registrations, a broadcast per connection) are not what is tested.
	args := append([]string{"serve", "--data-dir", dir, "--listen", addr, "--metrics-listen=", "--log-level", "warn", "--rate-limit", "0",
		"--node-id", id, "--sim-latency", "1s", "--broker-token-key", filepath.Join(c.shared, "broker.key"),
		"--audit-key", filepath.Join(c.shared, "audit-key.pem")}, c.args...)
	p := &proc{cmd: exec.Command(c.bin, args...), logs: &logBuffer{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.kill(t) })
	base := "http://" + addr
	waitFor(t, ctx, id+" ready", func() bool {
		select {
		case <-p.done:
			t.Fatalf("waqueue serve %s exited: %v\n%s", id, p.cmd.ProcessState, p.logs)
		default:
		}
		res, err := newAPI(base, "").call(ctx, "GET", "/readyz", nil, nil)
		return err == nil && res.Status == http.StatusOK
	})
	if c.key == "" {
		b, err := os.ReadFile(filepath.Join(dir, "admin.key"))
		if err != nil {
			t.Fatal(err)
		}
		c.key = strings.TrimSpace(string(b))
	}
	p.api = newAPI(base, c.key)
	c.nodes[id] = p
	return p
}

// live returns the APIs of the nodes still running, by node id.
func (c *cluster) live() []*api {
	var ids []string
	for id, p := range c.nodes {
		select {
		case <-p.done:
		default:
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	out := make([]*api, len(ids))
	for i, id := range ids {
		out[i] = c.nodes[id].api
	}
	return out
}

// cards returns every connection card by id, read from one node.
func cards(t *testing.T, ctx context.Context, a *api) map[string]card {
	var page struct {
		Connections []struct {
			ID string `json:"id"`
			card
		} `json:"connections"`
	}
	// No Waqueue-Min-Position: the callers poll for their condition anyway, and a node's read
	// models on the shared database did not report reaching the node's own writes (see
	// reliability.md, section 7).
	a.must(t, ctx, "GET", "/v1/connections", nil, map[string]string{"Waqueue-Min-Position": ""}, http.StatusOK, &page)
	out := make(map[string]card, len(page.Connections))
	for _, c := range page.Connections {
		out[c.ID] = c.card
	}
	return out
}

// parallelDo runs f(i) for i in [0, n) with 8 workers.
func parallelDo(n int, f func(i int)) {
	var wg sync.WaitGroup
	next := make(chan int)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				f(i)
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
}

// TestMultiNodeTakeover is issue 15.4: three `waqueue serve` processes (the built binary) share
// the stores and the dispatch through per-connection leases, with the default pacing (3 s + up to
// 2 s jitter between two messages of a connection), the default lease TTL and renewal (6 s, 2 s)
// and a simulated send latency of 1 s (so that a kill catches messages in flight).
//
//  1. Every connection gets a broadcast of 4; once about a quarter went out, n1 is killed with
//     SIGKILL. The test waits (reading the leases from the engine) until each lease n1 held has
//     another owner with a newer epoch, and logs how long that took.
//  2. n1 is restarted (a new node id, as a new process is) and n4 added; the test waits until
//     every lease sits on the node rendezvous hashing ranks first among the four (balancing
//     moves idle connections, so this also waits for the first broadcast to drain).
//  3. Every connection gets a broadcast of 3; once about a quarter went out, n3 is stopped with
//     SIGTERM: it drains (its sends in progress finish and are recorded: no outcome may end
//     unknown with cause "shutdown"), releases its leases and the others take its connections over at once,
//     mid-queue — where the pacing interval across nodes is really at stake (after a kill the
//     takeover waits out the TTL, longer than the interval).
//  4. Every queue drains; the leases are balanced over the three live nodes.
//
// Then each connection's history must pass domain/invariants.Check with nothing pending or in
// flight (no message stranded, none handed over twice), every message in flight on n1 at the
// kill ended unknown (never resent), hand-over epochs never go back, consecutive
// MessageDispatched are at least the pacing interval (3 s) apart whichever node dispatched them,
// and the first hand-over of each connection taken from n1 has a newer epoch and was decided
// after n1's lease expired by the engine's clock. The daily cap (1,000) is not reached here.
//
// Variants: "postgres" (events, read models and leases in one throwaway PostgreSQL cluster) and
// "esdb-nats" (events in the in-process EventStoreDB Streams server, read models in PostgreSQL,
// commands over an in-process NATS JetStream server, NATS key-value leases). 1,000 connections
// (multiNodeConnections).
func TestMultiNodeTakeover(t *testing.T) {
	bin := buildBinary(t)
	variants := []struct {
		name  string
		setup func(t *testing.T) ([]string, leaseReader)
	}{
		{"postgres", func(t *testing.T) ([]string, leaseReader) {
			url := pgtest.URL(t)
			return []string{"--db", url}, pgLeases(t, url)
		}},
		{"esdb-nats", func(t *testing.T) ([]string, leaseReader) {
			url, natsURL := pgtest.URL(t), startNATS(t)
			return []string{"--db", url, "--eventstore", esdbtest.Start(t), "--broker", natsURL}, natsLeases(t, natsURL)
		}},
	}
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			args, leases := v.setup(t)
			multiNode(t, bin, args, leases)
		})
	}
}

func multiNode(t *testing.T, bin string, storeArgs []string, readLeases leaseReader) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute) // safety net only
	defer cancel()
	n := multiNodeConnections(t)
	c := &cluster{t: t, bin: bin, shared: t.TempDir(), args: storeArgs, nodes: map[string]*proc{}}
	c.start(ctx, "n1") // first: creates the admin key, the token and audit key files
	c.start(ctx, "n2")
	c.start(ctx, "n3")
	leasesNow := func() map[string]leaseRow {
		t.Helper()
		m, err := readLeases(ctx)
		if err != nil {
			t.Fatalf("read leases: %v", err)
		}
		return m
	}

	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("mn-%04d", i)
	}
	apis := c.live()
	parallelDo(n, func(i int) {
		apis[i%len(apis)].must(t, ctx, "POST", "/v1/connections", map[string]any{"id": ids[i], "phone": fmt.Sprintf("+4917600%05d", i)},
			nil, http.StatusCreated, nil)
	})
	waitFor(t, ctx, "every connection active", func() bool {
		cs := cards(t, ctx, apis[0])
		active := 0
		for _, id := range ids {
			if cs[id].LinkStatus == "active" {
				active++
			}
		}
		return active == n
	})
	owners := func() map[string]int {
		m := map[string]int{}
		now := time.Now()
		for _, r := range leasesNow() {
			if r.Expires.After(now) {
				m[r.Owner]++
			}
		}
		return m
	}
	// balanced waits until each connection's lease is held by the node rendezvous hashing ranks
	// first among nodes (item 15.2: idle connections move to it within a few renewals).
	balanced := func(what string, nodes ...string) {
		t.Helper()
		start := time.Now()
		// A safety net of its own, so that a failure says which leases were wrong.
		bctx, cancelB := context.WithTimeout(ctx, 4*time.Minute)
		defer cancelB()
		for {
			now, ls := time.Now(), leasesNow()
			var wrong []string
			for _, id := range ids {
				r := ls[id]
				want := dispatcher.Rendezvous(connection.Key("default", id), nodes)
				if !r.Expires.After(now) || r.Owner != want {
					wrong = append(wrong, fmt.Sprintf("%s: owner %q epoch %d expiring in %s, want %q", id, r.Owner, r.Epoch, r.Expires.Sub(now).Round(time.Millisecond), want))
				}
			}
			if len(wrong) == 0 {
				break
			}
			if bctx.Err() != nil {
				var logs []string
				for id, p := range c.nodes {
					logs = append(logs, id+":\n"+lastLines(p.logs.String(), 8))
				}
				t.Fatalf("%s: %d leases not on the node rendezvous hashing ranks first among %v, e.g.\n%s\nnode logs:\n%s",
					what, len(wrong), nodes, strings.Join(wrong[:min(len(wrong), 8)], "\n"), strings.Join(logs, "\n"))
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Logf("%s: balanced over %v in %s: leases per node %v", what, nodes, time.Since(start).Round(100*time.Millisecond), owners())
	}
	balanced("start", "n1", "n2", "n3")

	broadcast := func(wave, k int) {
		apis := c.live()
		parallelDo(n, func(i int) {
			rcpts := make([]string, k)
			for j := range rcpts {
				rcpts[j] = fmt.Sprintf("+4917%d%05d%02d", wave, i, j)
			}
			apis[i%len(apis)].must(t, ctx, "POST", "/v1/connections/"+ids[i]+"/broadcasts", map[string]any{"recipients": rcpts, "text": "sale"},
				map[string]string{"Idempotency-Key": fmt.Sprintf("wave%d-%s", wave, ids[i])}, http.StatusAccepted, nil)
		})
	}
	// left is what the cards still count pending or in flight.
	left := func(a *api) uint64 {
		var sum uint64
		for _, cd := range cards(t, ctx, a) {
			sum += cd.Pending + cd.InFlight
		}
		return sum
	}
	broadcast(1, wave1)
	total1 := uint64(n * wave1)
	waitFor(t, ctx, "a quarter of the first broadcast sent", func() bool { return left(c.nodes["n2"].api) <= total1*3/4 })
	remaining := left(c.nodes["n2"].api)
	if remaining == 0 {
		t.Fatal("the first broadcast drained before the kill: nothing to take over mid-broadcast")
	}

	// Kill n1 mid-broadcast; note the leases it held (their epochs and expiry by the engine).
	// Every lease row naming n1 is its, live or not: on a loaded machine its renewals may lag
	// and some (or all) lapse before the kill — they must be taken over all the same.
	snapshotAt := time.Now()
	before := leasesNow()
	c.nodes["n1"].kill(t)
	killedAt := time.Now()
	held := map[string]leaseRow{}
	live := 0
	for id, r := range before {
		if r.Owner == "n1" {
			held[id] = r
			if r.Expires.After(snapshotAt) {
				live++
			}
		}
	}
	if len(held) == 0 {
		t.Fatalf("n1 held no lease at the kill; leases per node: %v", owners())
	}
	t.Logf("killed n1 with %d of %d messages of the first broadcast left, holding %d leases (%d live when read)", remaining, total1, len(held), live)

	// Wait until every lease of n1 has another owner with a newer epoch.
	var lastTaken time.Duration
	taken := map[string]bool{}
	waitFor(t, ctx, "n1's leases taken over", func() bool {
		now := leasesNow()
		for id, r := range held {
			if cur := now[id]; !taken[id] && cur.Owner != "n1" && cur.Epoch > r.Epoch && cur.Expires.After(time.Now()) {
				taken[id] = true
				lastTaken = time.Since(killedAt)
			}
		}
		return len(taken) == len(held)
	})
	ttl, renew := lease.DefaultTTL, lease.DefaultTTL/3
	t.Logf("TAKEOVER: %d leases of the killed node taken over within %s of the kill (documented bound TTL %s + renewal %s = %s; "+
		"observed by polling the engine)", len(held), lastTaken.Round(10*time.Millisecond), ttl, renew, ttl+renew)

	// Restart n1 (a new process is a new node) and add a fourth node; wait until rendezvous
	// balancing handed both a share.
	c.start(ctx, "n1b")
	c.start(ctx, "n4")
	balanced("restart and a fourth node", "n1b", "n2", "n3", "n4")
	wave2At := time.Now()
	broadcast(2, wave2)

	// Stop n3 gracefully mid-broadcast: it releases its leases, and the nodes that now rank first
	// take its connections over at once, mid-queue: the pacing interval must hold across the move
	// (the new owner rebuilds it from the stream).
	total2 := uint64(n * wave2)
	waitFor(t, ctx, "a quarter of the second broadcast sent", func() bool { return left(c.nodes["n2"].api) <= total2*3/4 })
	before = leasesNow()
	n3 := c.nodes["n3"]
	if err := n3.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	stoppedAt := time.Now()
	select {
	case <-n3.done:
	case <-ctx.Done():
		t.Fatal("n3 did not stop after SIGTERM")
	}
	moved := 0
	for _, r := range before {
		if r.Owner == "n3" && r.Expires.After(stoppedAt) {
			moved++
		}
	}
	t.Logf("n3 stopped gracefully in %s with %d of %d messages of the second broadcast left, holding %d leases",
		time.Since(stoppedAt).Round(10*time.Millisecond), left(c.nodes["n2"].api), total2, moved)
	balanced("graceful stop of n3", "n1b", "n2", "n4")
	t.Logf("GRACEFUL: n3's leases on their new owners %s after SIGTERM", time.Since(stoppedAt).Round(10*time.Millisecond))

	// Every queue drains.
	waitFor(t, ctx, "every queue drained", func() bool { return left(c.nodes["n4"].api) == 0 })
	t.Logf("drained %s after the second broadcast", time.Since(wave2At).Round(100*time.Millisecond))
	balanced("drained", "n1b", "n2", "n4")

	base := c.nodes["n2"].api.base
	var dispatched, unknown, retried, inFlight int
	var minGap time.Duration = -1
	histories := make([][]recorded, n)
	// A fresh client per history: it sends no Waqueue-Min-Position (the history is read from the
	// event store after every queue drained).
	parallelDo(n, func(i int) { histories[i] = newAPI(base, c.key).history(t, ctx, ids[i]) })
	for i, id := range ids {
		h := histories[i]
		rep := check(t, id, h, nil)
		if err := settled(rep); err != nil {
			t.Errorf("%s: %v", id, err)
		}
		if rep.Queued != wave1+wave2 {
			t.Errorf("%s: %d messages queued, want %d", id, rep.Queued, wave1+wave2)
		}
		var lastAt time.Time
		var lastEpoch uint64
		var takeover *connection.MessageDispatched
		for _, e := range h {
			var epoch uint64
			switch ev := e.Event.(type) {
			case connection.MessageDispatched:
				dispatched++
				epoch = ev.Epoch
				if !lastAt.IsZero() {
					gap := ev.DispatchedAt.Sub(lastAt)
					if minGap < 0 || gap < minGap {
						minGap = gap
					}
					if gap < connection.DefaultMinInterval {
						t.Errorf("%s: seq %d dispatched %s after the previous (epoch %d after %d): pacing interval %s broken",
							id, ev.Seq, gap, ev.Epoch, lastEpoch, connection.DefaultMinInterval)
					}
				}
				lastAt = ev.DispatchedAt
				if r, ok := held[id]; ok && takeover == nil && ev.Epoch > r.Epoch {
					takeover = &ev
				}
			case connection.MessageSendRetried:
				retried++
				epoch = ev.Epoch
			case connection.MessageOutcomeUnknown:
				unknown++
				if ev.Cause == "shutdown" {
					// n3's graceful stop drains: its sends in progress finish and are recorded
					// (before the drain, ~47 of them ended unknown here at 1,000 connections).
					t.Errorf("%s: seq %d recorded unknown by a graceful stop (cause shutdown), want its outcome", id, ev.Seq)
				}
				continue
			default:
				continue
			}
			if epoch < lastEpoch {
				t.Errorf("%s: revision %d handed over with epoch %d after epoch %d (a stale owner)", id, e.Revision, epoch, lastEpoch)
			}
			lastEpoch = epoch
		}
		if _, ok := held[id]; ok {
			inFlight += checkKilledInFlight(t, id, h, killedAt)
		}
		if r, ok := held[id]; ok && takeover != nil && takeover.DispatchedAt.Before(r.Expires) {
			t.Errorf("%s: taken over from the killed node (epoch %d, lease expiring %s) by epoch %d dispatching at %s, before the expiry",
				id, r.Epoch, r.Expires.Format(time.RFC3339Nano), takeover.Epoch, takeover.DispatchedAt.Format(time.RFC3339Nano))
		}
	}
	t.Logf("%d connections, %d dispatches (%d retried hand-overs, %d outcomes unknown; %d in flight on the killed node, each recorded unknown by its successor), "+
		"smallest interval between two dispatches of a connection %s",
		n, dispatched, retried, unknown, inFlight, minGap.Round(time.Millisecond))
	if t.Failed() {
		for id, p := range c.nodes {
			t.Logf("%s errors:\n%s", id, errorLines(p.logs.String(), 10))
		}
	}
}

// checkKilledInFlight checks that every message of h handed over before killedAt and not
// acknowledged by then (in flight on the killed node) was recorded unknown afterwards (by the
// node that took the connection over; invariants.Check already refused a second hand-over), and
// returns how many there were.
func checkKilledInFlight(t *testing.T, id string, h []recorded, killedAt time.Time) int {
	t.Helper()
	open := map[uint64]bool{}
	for _, e := range h {
		if !e.RecordedAt.Before(killedAt) {
			break
		}
		if seq, d, a := ack(e.Event); d {
			open[seq] = true
		} else if a {
			delete(open, seq)
		}
	}
	n := len(open)
	for _, e := range h {
		if u, ok := e.Event.(connection.MessageOutcomeUnknown); ok && !e.RecordedAt.Before(killedAt) {
			delete(open, u.Seq)
		}
	}
	for seq := range open {
		t.Errorf("%s: seq %d was in flight on the killed node and was never recorded unknown", id, seq)
	}
	return n
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

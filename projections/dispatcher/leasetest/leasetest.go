// Package leasetest is the conformance suite of dispatcher.Leases adapters: one suite for every
// adapter, run against the real engine.
package leasetest

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/waqueue/waqueue/internal/testwait"
	"github.com/waqueue/waqueue/projections/dispatcher"
)

// Opener returns the leases of one node, with the given TTL, on a backend shared by every call
// made for the same test.
type Opener func(node string, ttl time.Duration) dispatcher.Leases

// Run runs the suite. newBackend gives each subtest a fresh backend. exclusive says whether the
// adapter excludes other nodes (false only for dispatcher.SingleNode, whose every claim is
// granted with epoch 0 and whose leases never expire).
func Run(t *testing.T, newBackend func(t *testing.T) Opener, exclusive bool) {
	ctx := context.Background()
	key := func(c string) dispatcher.LeaseKey { return dispatcher.LeaseKey{Tenant: "t1", ConnectionID: c} }
	claim1 := func(t *testing.T, l dispatcher.Leases, k dispatcher.LeaseKey) (dispatcher.Lease, bool) {
		t.Helper()
		got, err := l.Claim(ctx, []dispatcher.LeaseKey{k})
		if err != nil {
			t.Fatalf("%s claim %v: %v", l.Node(), k, err)
		}
		switch len(got) {
		case 0:
			return dispatcher.Lease{}, false
		case 1:
			if got[0].LeaseKey != k {
				t.Fatalf("claim %v granted %v", k, got[0])
			}
			return got[0], true
		}
		t.Fatalf("claim of one key granted %v", got)
		return dispatcher.Lease{}, false
	}
	renewed := func(t *testing.T, l dispatcher.Leases) map[dispatcher.LeaseKey]uint64 {
		t.Helper()
		got, err := l.Renew(ctx)
		if err != nil {
			t.Fatalf("%s renew: %v", l.Node(), err)
		}
		m := map[dispatcher.LeaseKey]uint64{}
		for _, g := range got {
			m[g.LeaseKey] = g.Epoch
		}
		return m
	}
	const long = time.Hour

	t.Run("claim renew release", func(t *testing.T) {
		open := newBackend(t)
		a := open("a", long)
		first, ok := claim1(t, a, key("c1"))
		if !ok {
			t.Fatal("a new key not granted")
		}
		again, ok := claim1(t, a, key("c1"))
		if !ok || again.Epoch != first.Epoch {
			t.Fatalf("re-claim by the owner: %v %v, want epoch %d", again, ok, first.Epoch)
		}
		if r := renewed(t, a); len(r) != 1 || r[key("c1")] != first.Epoch {
			t.Fatalf("renew = %v", r)
		}
		if err := a.Release(ctx, []dispatcher.LeaseKey{key("c1"), key("never-claimed")}); err != nil {
			t.Fatal(err)
		}
		if r := renewed(t, a); len(r) != 0 {
			t.Fatalf("renew after release = %v", r)
		}
	})

	if !exclusive {
		t.Run("single node grants everything", func(t *testing.T) {
			a := newBackend(t)("a", 0)
			if a.TTL() != 0 {
				t.Fatalf("TTL %s, want 0 for a non-exclusive adapter", a.TTL())
			}
			keys := make([]dispatcher.LeaseKey, 100)
			for i := range keys {
				keys[i] = key(fmt.Sprint("c", i))
			}
			got, err := a.Claim(ctx, keys)
			if err != nil || len(got) != len(keys) {
				t.Fatalf("claim %d keys: %d granted, %v", len(keys), len(got), err)
			}
			if err := a.Release(ctx, nil); err != nil {
				t.Fatal(err)
			}
			if r := renewed(t, a); len(r) != 0 {
				t.Fatalf("renew after releasing all = %v", r)
			}
		})
		return
	}

	t.Run("another node is excluded until release; epoch grows on a change of owner", func(t *testing.T) {
		open := newBackend(t)
		a, b := open("a", long), open("b", long)
		la, ok := claim1(t, a, key("c1"))
		if !ok || la.Epoch == 0 {
			t.Fatalf("a's claim: %v %v (epochs start at 1)", la, ok)
		}
		if _, ok := claim1(t, b, key("c1")); ok {
			t.Fatal("b was granted a lease a holds")
		}
		if r := renewed(t, b); len(r) != 0 {
			t.Fatalf("b renewed %v", r)
		}
		if r := renewed(t, a); r[key("c1")] != la.Epoch {
			t.Fatalf("a's renewal after b's refused claim = %v (the refused claim changed the lease)", r)
		}
		if err := a.Release(ctx, nil); err != nil {
			t.Fatal(err)
		}
		lb, ok := claim1(t, b, key("c1"))
		if !ok || lb.Epoch != la.Epoch+1 {
			t.Fatalf("b's claim after release: %v %v, want epoch %d", lb, ok, la.Epoch+1)
		}
		if _, ok := claim1(t, a, key("c1")); ok {
			t.Fatal("a re-claimed a lease b holds")
		}
		if r := renewed(t, a); len(r) != 0 {
			t.Fatalf("a renewed %v after losing it", r)
		}
		// Back to a: the epoch grows again, never reused.
		if err := b.Release(ctx, []dispatcher.LeaseKey{key("c1")}); err != nil {
			t.Fatal(err)
		}
		la2, ok := claim1(t, a, key("c1"))
		if !ok || la2.Epoch != lb.Epoch+1 {
			t.Fatalf("a's claim back: %v %v, want epoch %d", la2, ok, lb.Epoch+1)
		}
	})

	t.Run("leases are per tenant", func(t *testing.T) {
		open := newBackend(t)
		a, b := open("a", long), open("b", long)
		if _, ok := claim1(t, a, dispatcher.LeaseKey{Tenant: "t1", ConnectionID: "c"}); !ok {
			t.Fatal("a not granted")
		}
		if _, ok := claim1(t, b, dispatcher.LeaseKey{Tenant: "t2", ConnectionID: "c"}); !ok {
			t.Fatal("b not granted the same connection id in another tenant")
		}
	})

	t.Run("an expired lease is taken over and not renewed by its old owner", func(t *testing.T) {
		open := newBackend(t)
		ttl := 300 * time.Millisecond
		a, b := open("a", ttl), open("b", ttl)
		la, ok := claim1(t, a, key("c1"))
		if !ok {
			t.Fatal("a not granted")
		}
		// a stops renewing (a crash, a pause): wait for the condition, b's claim succeeding.
		deadline := time.Now().Add(testwait.Limit)
		var lb dispatcher.Lease
		for {
			if lb, ok = claim1(t, b, key("c1")); ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("b never took over the expired lease")
			}
			time.Sleep(ttl / 10)
		}
		if lb.Epoch != la.Epoch+1 {
			t.Fatalf("takeover epoch %d, want %d", lb.Epoch, la.Epoch+1)
		}
		if r := renewed(t, a); len(r) != 0 {
			t.Fatalf("the old owner renewed %v", r)
		}
	})

	// awaitClaim claims k for l until it is granted (another node's session has to lapse first).
	awaitClaim := func(t *testing.T, l dispatcher.Leases, k dispatcher.LeaseKey, pause time.Duration) dispatcher.Lease {
		t.Helper()
		deadline := time.Now().Add(testwait.Limit)
		for {
			if g, ok := claim1(t, l, k); ok {
				return g
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s never got %v", l.Node(), k)
			}
			time.Sleep(pause)
		}
	}

	t.Run("a lapsed session loses every lease at once; renewing does not get them back", func(t *testing.T) {
		// Leases are tied to their owner's session: when a's session lapses (a stops renewing: a
		// crash, a pause, a partition), every lease of it is free at once, to another node with
		// the epoch plus one; a's next renewal starts a new session that holds nothing.
		open := newBackend(t)
		ttl := 300 * time.Millisecond
		a, b := open("a", ttl), open("b", long)
		ks := make([]dispatcher.LeaseKey, 50)
		for i := range ks {
			ks[i] = key(fmt.Sprint("c", i))
		}
		first, err := a.Claim(ctx, ks)
		if err != nil || len(first) != len(ks) {
			t.Fatalf("a claimed %d of %d: %v", len(first), len(ks), err)
		}
		epochs := map[dispatcher.LeaseKey]uint64{}
		for _, l := range first {
			epochs[l.LeaseKey] = l.Epoch
		}
		// Wait for the condition (b granted one key), then every other key is b's in one call.
		g0 := awaitClaim(t, b, ks[0], ttl/10)
		rest, err := b.Claim(ctx, ks[1:])
		if err != nil || len(rest) != len(ks)-1 {
			t.Fatalf("after a's session lapsed, b was granted %d of the other %d keys at once: %v", len(rest), len(ks)-1, err)
		}
		for _, g := range append(rest, g0) {
			if g.Epoch != epochs[g.LeaseKey]+1 {
				t.Fatalf("%v taken over with epoch %d, want %d", g.LeaseKey, g.Epoch, epochs[g.LeaseKey]+1)
			}
		}
		// The lapsed node wakes up: its renewal returns nothing, twice (its new session holds
		// nothing), and b keeps every lease with its epoch.
		for range 2 {
			if r := renewed(t, a); len(r) != 0 {
				t.Fatalf("the lapsed node renewed %d leases (e.g. %v) another node took over", len(r), first[0])
			}
		}
		if r := renewed(t, b); len(r) != len(ks) {
			t.Fatalf("b renewed %d of %d after a woke up", len(r), len(ks))
		}
		// Its new session claims afresh: keys b holds are refused, a new key is granted, and only
		// that one is renewed.
		if _, ok := claim1(t, a, ks[3]); ok {
			t.Fatal("the lapsed node re-claimed a lease b holds")
		}
		fresh, ok := claim1(t, a, key("fresh"))
		if !ok {
			t.Fatal("the lapsed node's new session was not granted a free key")
		}
		if r := renewed(t, a); len(r) != 1 || r[key("fresh")] != fresh.Epoch {
			// (a may lapse again between the claim and the renewal on a very slow machine: then
			// nothing is renewed, which is also right; anything else is not.)
			if len(r) != 0 {
				t.Fatalf("a's new session renewed %v, want only %v", r, key("fresh"))
			}
		}
		if r := renewed(t, b); r[ks[3]] != epochs[ks[3]]+1 {
			t.Fatalf("b's lease of %v after a's refused claim: %v", ks[3], r[ks[3]])
		}
	})

	t.Run("a lapsed session nobody took over: renewing holds nothing, claiming again keeps the epoch", func(t *testing.T) {
		open := newBackend(t)
		ttl := 200 * time.Millisecond
		a := open("a", ttl)
		la, ok := claim1(t, a, key("c1"))
		if !ok {
			t.Fatal("a not granted")
		}
		// Pause past the TTL (a GC pause): the session lapsed by the engine's clock.
		time.Sleep(3 * ttl)
		if r := renewed(t, a); len(r) != 0 {
			t.Fatalf("a renewal after the session lapsed returned %v: a lapsed session must not come back", r)
		}
		again, ok := claim1(t, a, key("c1"))
		if !ok || again.Epoch != la.Epoch {
			t.Fatalf("a's claim again: %v %v, want epoch %d (nobody else held it)", again, ok, la.Epoch)
		}
	})

	t.Run("a stale owner is refused: its claims, renewals and releases leave the new owner's lease alone", func(t *testing.T) {
		// a GC-pause-like stale owner: a's session lapses while a still believes it holds c1; b
		// takes c1 over with a higher epoch (the epoch the stream fence compares); a then acts on
		// its old belief.
		open := newBackend(t)
		ttl := 300 * time.Millisecond
		a, b, c := open("a", ttl), open("b", long), open("c", long)
		la, ok := claim1(t, a, key("c1"))
		if !ok {
			t.Fatal("a not granted")
		}
		lb := awaitClaim(t, b, key("c1"), ttl/10)
		if lb.Epoch <= la.Epoch {
			t.Fatalf("b's epoch %d not above the stale owner's %d: the stream fence could not tell them apart", lb.Epoch, la.Epoch)
		}
		if err := a.Release(ctx, []dispatcher.LeaseKey{key("c1")}); err != nil {
			t.Fatal(err)
		}
		if _, ok := claim1(t, c, key("c1")); ok {
			t.Fatal("the stale owner's release freed the new owner's lease")
		}
		if _, ok := claim1(t, a, key("c1")); ok {
			t.Fatal("the stale owner re-claimed the lease")
		}
		if err := a.Release(ctx, nil); err != nil {
			t.Fatal(err)
		}
		if _, ok := claim1(t, c, key("c1")); ok {
			t.Fatal("the stale owner's full release freed the new owner's lease")
		}
		if r := renewed(t, b); r[key("c1")] != lb.Epoch {
			t.Fatalf("b's lease after the stale owner woke: %v, want epoch %d", r, lb.Epoch)
		}
	})

	t.Run("renewals racing takeovers never leave two nodes trusting one lease", func(t *testing.T) {
		// Two nodes with a short TTL pause at random (sometimes past the TTL) between renewing
		// and claiming the same keys. A node trusts a lease from the start of the call that
		// granted or renewed it until that start plus the TTL (what the Dispatcher does); a
		// lease granted to the other node with a higher epoch must be received only after that.
		open := newBackend(t)
		ttl := 150 * time.Millisecond
		type grant struct {
			node       string
			epoch      uint64
			start, end time.Time
		}
		ks := make([]dispatcher.LeaseKey, 8)
		for i := range ks {
			ks[i] = key(fmt.Sprint("c", i))
		}
		var mu sync.Mutex
		grants := map[dispatcher.LeaseKey][]grant{}
		record := func(node string, got []dispatcher.Lease, start, end time.Time) {
			mu.Lock()
			defer mu.Unlock()
			for _, g := range got {
				grants[g.LeaseKey] = append(grants[g.LeaseKey], grant{node, g.Epoch, start, end})
			}
		}
		rounds := 40
		if testing.Short() {
			rounds = 15
		}
		// The racing rounds usually move a lease, but whether they do depends on how the two
		// nodes' pauses line up, which a loaded machine shifts. So after them the nodes go on
		// until a lease has moved: the node holding leases then pauses well past the TTL and
		// the other claims without pausing, which moves one within a round or two however
		// slow the machine is. The invariant below is checked over every round alike.
		var moved atomic.Bool
		const extraRounds = 200
		var wg sync.WaitGroup
		for n, name := range []string{"a", "b"} {
			l := open(name, ttl)
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < rounds || !moved.Load(); i++ {
					if i >= rounds+extraRounds {
						t.Errorf("%s: no lease moved in %d rounds", name, i)
						return
					}
					start := time.Now()
					renewedNow, err := l.Renew(ctx)
					if err != nil {
						t.Error(err)
						return
					}
					record(name, renewedNow, start, time.Now())
					start = time.Now()
					claimed, err := l.Claim(ctx, ks)
					if err != nil {
						t.Error(err)
						return
					}
					record(name, claimed, start, time.Now())
					for _, g := range append(renewedNow, claimed...) {
						if g.Epoch > 1 {
							moved.Store(true)
						}
					}
					var pause time.Duration
					switch {
					case i >= rounds && len(renewedNow)+len(claimed) > 0:
						pause = 3 * ttl
					case i >= rounds:
						pause = 0
					case (i+n)%4 == 3:
						// Deterministic pauses per node: short ones, and past the TTL every few rounds.
						pause = ttl + ttl/2
					default:
						pause = time.Duration((i*7+n*3)%5) * ttl / 8
					}
					time.Sleep(pause)
				}
			}()
		}
		wg.Wait()
		if !moved.Load() {
			t.Fatal("no lease changed owner: the pauses past the TTL did not exercise a takeover")
		}
		for k, gs := range grants {
			for _, g1 := range gs {
				for _, g2 := range gs {
					if g1.node == g2.node {
						continue
					}
					if g1.epoch == g2.epoch {
						t.Fatalf("%v: epoch %d granted to %s and %s", k, g1.epoch, g1.node, g2.node)
					}
					if g2.epoch > g1.epoch && g2.end.Before(g1.start.Add(ttl)) {
						t.Fatalf("%v: %s trusted epoch %d until %s but %s received epoch %d at %s",
							k, g1.node, g1.epoch, g1.start.Add(ttl).Format("15:04:05.000"), g2.node, g2.epoch, g2.end.Format("15:04:05.000"))
					}
				}
			}
		}
	})

	t.Run("concurrent claims grant one node", func(t *testing.T) {
		open := newBackend(t)
		const nodes, keys = 6, 50
		ks := make([]dispatcher.LeaseKey, keys)
		for i := range ks {
			ks[i] = key(fmt.Sprint("c", i))
		}
		var mu sync.Mutex
		owners := map[dispatcher.LeaseKey][]string{}
		var wg sync.WaitGroup
		start := make(chan struct{})
		for n := range nodes {
			l := open(fmt.Sprint("n", n), long)
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				got, err := l.Claim(ctx, ks)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				for _, g := range got {
					owners[g.LeaseKey] = append(owners[g.LeaseKey], l.Node())
				}
				mu.Unlock()
			}()
		}
		close(start)
		wg.Wait()
		for _, k := range ks {
			if len(owners[k]) != 1 {
				t.Errorf("%v granted to %v, want exactly one node", k, owners[k])
			}
		}
	})

	t.Run("a node's concurrent claims and renewals of its own leases never lose them", func(t *testing.T) {
		// The Dispatcher claims from each connection's loop while its renewal loop renews every
		// lease: neither may make the other miss a lease the node holds.
		open := newBackend(t)
		a := open("a", long)
		ks := make([]dispatcher.LeaseKey, 20)
		for i := range ks {
			ks[i] = key(fmt.Sprint("c", i))
		}
		first, err := a.Claim(ctx, ks)
		if err != nil || len(first) != len(ks) {
			t.Fatalf("claimed %d of %d: %v", len(first), len(ks), err)
		}
		var wg sync.WaitGroup
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 10 {
					if g%2 == 0 {
						got, err := a.Claim(ctx, ks[g:g+5])
						if err != nil || len(got) != 5 {
							t.Errorf("re-claim of 5 held keys granted %d: %v", len(got), err)
							return
						}
						continue
					}
					got, err := a.Renew(ctx)
					if err != nil || len(got) != len(ks) {
						t.Errorf("renewal returned %d of %d held leases: %v", len(got), len(ks), err)
						return
					}
				}
			}()
		}
		wg.Wait()
		if r := renewed(t, a); len(r) != len(ks) {
			t.Fatalf("after the races: renewed %d of %d", len(r), len(ks))
		}
		for _, l := range first {
			if r := renewed(t, a); r[l.LeaseKey] != l.Epoch {
				t.Fatalf("%v: epoch %d after the races, want %d (the owner never changed)", l.LeaseKey, r[l.LeaseKey], l.Epoch)
			}
			break
		}
	})

	t.Run("membership: a renewal is a heartbeat, a full release leaves", func(t *testing.T) {
		open := newBackend(t)
		a, b := open("a", long), open("b", long)
		ma, ok := a.(dispatcher.Membership)
		if !ok {
			t.Skip("the adapter does not implement dispatcher.Membership")
		}
		live := func() []string {
			t.Helper()
			n, err := ma.LiveNodes(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
		renewed(t, a)
		renewed(t, b)
		if got := live(); len(got) != 2 || got[0] != "a" || got[1] != "b" {
			t.Fatalf("live nodes %v, want [a b]", got)
		}
		if err := b.Release(ctx, nil); err != nil {
			t.Fatal(err)
		}
		if got := live(); len(got) != 1 || got[0] != "a" {
			t.Fatalf("live nodes after b left: %v, want [a]", got)
		}
	})

	t.Run("one call claims and renews many", func(t *testing.T) {
		open := newBackend(t)
		a := open("a", long)
		ks := make([]dispatcher.LeaseKey, 2000)
		for i := range ks {
			ks[i] = key(fmt.Sprint("c", i))
		}
		got, err := a.Claim(ctx, append(ks, ks[0])) // a duplicate key is granted once
		if err != nil || len(got) != len(ks) {
			t.Fatalf("claimed %d of %d: %v", len(got), len(ks), err)
		}
		if r := renewed(t, a); len(r) != len(ks) {
			t.Fatalf("renewed %d of %d", len(r), len(ks))
		}
	})
}

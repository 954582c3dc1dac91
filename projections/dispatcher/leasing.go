package dispatcher

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/waqueue/waqueue/adapters/transport"
	"github.com/waqueue/waqueue/domain/connection"
)

// leaseState is what the Dispatcher knows of its lease on one connection. Guarded by
// Dispatcher.mu. Lease times are real time (time.Now, monotonic): a lease is a bound on I/O,
// not a schedule, and the injected Clock may be a test's fake.
type leaseState struct {
	held  bool
	known bool // a lease was granted once in this process (epoch is meaningful)
	// foreign: not held, and to be claimed by the renewals: the last claim was refused (another
	// node holds it), or the connection was found idle at start (connState.idle).
	foreign bool
	// claiming is true while the loop's Claim is in flight: a renewal must not take the lease
	// it may be granting for a stray one.
	claiming bool
	epoch    uint64
	// renewal is the number of the last renewal (Dispatcher.renewals) that returned this lease
	// with its epoch (see renewOnce).
	renewal uint64
	// until is the start of the claim or renewal that granted it plus the TTL: the lease is not
	// trusted past this instant.
	until time.Time
	// recorded is when the grant or renewal was recorded here: a renewal that started before
	// it may not include the lease (the claim committed after the renewal read), which does
	// not mean it was lost.
	recorded time.Time
}

// validLocked reports whether the lease is held and not past its local expiry.
func (d *Dispatcher) validLocked(l *leaseState, now time.Time) bool {
	return l.held && (d.cfg.Leases.TTL() == 0 || now.Before(l.until))
}

// leaseKey returns the lease key of the connection with the tenant-scoped key connKey (the
// dispatcher's connection id): its tenant and its bare id.
func leaseKey(connKey string) LeaseKey {
	t, id := connection.SplitKey(connKey)
	return LeaseKey{Tenant: t, ConnectionID: id}
}

// key returns the tenant-scoped key (connection.Key) of the lease's connection.
func (k LeaseKey) key() string { return connection.Key(k.Tenant, k.ConnectionID) }

// errLeaseHeldElsewhere: the connection's lease is held by another node.
var errLeaseHeldElsewhere = errors.New("dispatcher: lease held by another node")

// lease returns the epoch of this node's lease on the connection, claiming it when it is not
// held (or past its local expiry). It returns errLeaseHeldElsewhere when another node holds it:
// the loop then stops, and renewals retry the claim. takeover is true when the lease was
// granted with another epoch than the last one this process held (or for the first time): the
// messages in flight were dispatched by another owner and are recovered before any dispatch.
//
// A lease still held but past its local expiry is waited for, not claimed: the renewal is late
// (a busy database, or its statement queued behind others), and the next renewal, asked for at
// once, extends every lease of the node in one call. Claiming it alone instead costs two
// statements, one claim at a time per node; when thousands of loops did so at once they kept
// the renewal itself waiting past the TTL, so no lease was ever valid again and every turn of
// every loop claimed its lease anew (issue 12, bench dispatch at 10,000 connections: 10
// database transactions per message). Only if that renewal does not make it valid is the lease
// claimed.
func (d *Dispatcher) lease(ctx context.Context, connID string, st *connState) (epoch uint64, takeover bool, err error) {
	d.mu.Lock()
	if d.validLocked(&st.lease, time.Now()) {
		e, tk := st.lease.epoch, st.takeover
		st.takeover = false
		d.mu.Unlock()
		return e, tk, nil
	}
	if st.lease.held && d.renewing {
		if err := d.awaitRenewalLocked(ctx, st); err != nil {
			d.mu.Unlock()
			return 0, false, err
		}
		if d.validLocked(&st.lease, time.Now()) {
			e, tk := st.lease.epoch, st.takeover
			st.takeover = false
			d.mu.Unlock()
			return e, tk, nil
		}
	}
	d.mu.Unlock()
	if _, err := d.tenant(ctx, connID); err != nil { // a connection this store does not know
		return 0, false, err
	}
	d.mu.Lock()
	if !d.preferredLocked(connID) {
		// Another live node ranks first: it claims the connection (renewals retry it here if
		// that node goes away). A lease held until now (past its local expiry) is released, so
		// that node need not wait for it to expire, and it is not renewed on here.
		wasHeld := st.lease.held
		st.lease.held, st.lease.foreign = false, true
		d.mu.Unlock()
		if wasHeld {
			d.lost(connID)
			if err := d.cfg.Leases.Release(ctx, []LeaseKey{leaseKey(connID)}); err != nil && ctx.Err() == nil {
				d.log.Warn("releasing a lease another node ranks first for failed; the renewals release it", "connection", connID, "err", err)
			}
		}
		return 0, false, errLeaseHeldElsewhere
	}
	st.lease.claiming = true
	d.mu.Unlock()
	start, got, err := d.claimShared(ctx, leaseKey(connID))
	d.mu.Lock()
	st.lease.claiming = false // in the critical section that records the outcome
	if err != nil {
		d.mu.Unlock()
		return 0, false, err
	}
	if len(got) == 0 {
		wasHeld := st.lease.held
		st.lease.held, st.lease.foreign = false, true
		d.mu.Unlock()
		if wasHeld {
			d.lost(connID)
		}
		return 0, false, errLeaseHeldElsewhere
	}
	l := &st.lease
	takeover = !l.known || l.epoch != got[0].Epoch || st.takeover
	st.takeover = false
	gained := !l.held
	l.held, l.known, l.foreign, l.epoch, l.until = true, true, false, got[0].Epoch, start.Add(d.cfg.Leases.TTL())
	l.recorded = time.Now()
	d.mu.Unlock()
	if gained {
		d.gained(ctx, connID)
	}
	return got[0].Epoch, takeover, nil
}

// claimBatch is one Claim call shared by the loops that need a claim at the same time.
type claimBatch struct {
	keys  []LeaseKey
	start time.Time // when the Claim call started
	got   []Lease
	err   error
	done  chan struct{} // closed when got and err are set
}

// claimShared claims k's lease in the next Claim call, with every other key whose loop needs a
// claim meanwhile (at most claimChunk a call), and returns that call's start and k's lease
// (none when refused). One goroutine makes the calls, one after the other. The PostgreSQL
// adapter takes two statements per call, one call at a time per node: 10,000 loops claiming
// alone (the connections registered in a burst, bench dispatch) queued for tens of seconds,
// with the node's renewal behind them, so the leases claimed first lapsed before it came.
func (d *Dispatcher) claimShared(ctx context.Context, k LeaseKey) (time.Time, []Lease, error) {
	d.mu.Lock()
	var b *claimBatch
	if n := len(d.claimQueue); n > 0 && len(d.claimQueue[n-1].keys) < claimChunk {
		b = d.claimQueue[n-1]
	} else {
		b = &claimBatch{done: make(chan struct{})}
		d.claimQueue = append(d.claimQueue, b)
	}
	b.keys = append(b.keys, k)
	if !d.claimRunning {
		d.claimRunning = true
		d.wg.Add(1)
		go d.runClaims(ctx)
	}
	d.mu.Unlock()
	select {
	case <-b.done:
	case <-ctx.Done():
		return time.Time{}, nil, ctx.Err()
	}
	if b.err != nil {
		return time.Time{}, nil, b.err
	}
	for _, l := range b.got {
		if l.LeaseKey == k {
			return b.start, []Lease{l}, nil
		}
	}
	return b.start, nil, nil
}

// runClaims makes the queued batches' Claim calls until none is queued.
func (d *Dispatcher) runClaims(ctx context.Context) {
	defer d.wg.Done()
	for {
		d.mu.Lock()
		if len(d.claimQueue) == 0 {
			d.claimRunning = false
			d.mu.Unlock()
			return
		}
		b := d.claimQueue[0]
		d.claimQueue[0] = nil
		d.claimQueue = d.claimQueue[1:]
		d.mu.Unlock()
		b.start = time.Now()
		b.got, b.err = d.cfg.Leases.Claim(ctx, b.keys)
		close(b.done)
	}
}

// awaitRenewalLocked asks the renewals for a renewal now and waits until one started after the
// call has ended, the renewals stopped, the lease is no longer held, or ctx ends (its error).
// Called and returns with d.mu held.
func (d *Dispatcher) awaitRenewalLocked(ctx context.Context, st *connState) error {
	want := d.renewStarts + 1
	for d.renewing && d.renewEnds < want && st.lease.held {
		ch := d.changed
		d.mu.Unlock()
		select {
		case d.renewNow <- struct{}{}:
		default: // asked already
		}
		select {
		case <-ch:
		case <-ctx.Done():
			d.mu.Lock()
			return ctx.Err()
		}
		d.mu.Lock()
	}
	return nil
}

// dropLease forgets the lease after the domain refused a stale epoch: another node took it.
func (d *Dispatcher) dropLease(connID string, st *connState) {
	d.mu.Lock()
	wasHeld := st.lease.held
	st.lease.held, st.lease.foreign = false, true
	d.mu.Unlock()
	d.m.leaseLost.Inc()
	d.log.Warn("lease taken over by another node (stale epoch refused); stopping the connection's loop", "connection", connID)
	if wasHeld {
		d.lost(connID)
	}
}

// preferredLocked reports whether this node ranks first for the connection among the live
// nodes (always true without Membership, or before the live set is known).
func (d *Dispatcher) preferredLocked(connKey string) bool {
	if len(d.live) == 0 {
		return true
	}
	me := d.cfg.Leases.Node()
	nodes := d.live
	if !slices.Contains(nodes, me) {
		nodes = append(slices.Clone(nodes), me)
	}
	return Rendezvous(connKey, nodes) == me
}

// sessions reports whether the Dispatcher connects and disconnects transport sessions with its
// leases: only when the leases exclude other nodes.
func (d *Dispatcher) sessions() bool { return d.cfg.Leases.TTL() > 0 }

// gained connects the connection's transport session (exclusive leases only).
func (d *Dispatcher) gained(ctx context.Context, connID string) {
	d.m.leasesHeld.Inc()
	if !d.sessions() {
		return
	}
	d.log.Info("lease gained", "connection", connID, "node", d.cfg.Leases.Node())
	if err := d.cfg.Transport.Connect(ctx, connID); err != nil && !errors.Is(err, transport.ErrNotPaired) && ctx.Err() == nil {
		d.log.Warn("connect after gaining the lease failed", "connection", connID, "err", err)
	}
}

// lost disconnects the connection's transport session (exclusive leases only).
func (d *Dispatcher) lost(connID string) {
	d.m.leasesHeld.Dec()
	if !d.sessions() {
		return
	}
	d.log.Info("lease lost", "connection", connID, "node", d.cfg.Leases.Node())
	if err := d.cfg.Transport.Disconnect(context.Background(), connID); err != nil {
		d.log.Warn("disconnect after losing the lease failed", "connection", connID, "err", err)
	}
}

// renew runs until ctx ends: every LeaseRenewInterval it renews all of this node's leases in
// one call, drops those not renewed (another node may hold them now: their loops stop before
// the next hand-over and their sessions are disconnected), and claims, in one call, the
// connections whose claim was refused before (a dead node's leases expire and are taken over
// here; their loops are woken).
func (d *Dispatcher) renew(ctx context.Context) {
	ttl := d.cfg.Leases.TTL()
	if ttl == 0 {
		return
	}
	tick := time.NewTicker(d.cfg.LeaseRenewInterval)
	defer tick.Stop()
	d.mu.Lock()
	d.renewing = true
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		d.renewing = false
		d.notifyLocked() // loops waiting for a renewal claim their leases instead
		d.mu.Unlock()
	}()
	for {
		d.renewOnce(ctx, ttl) // at once: the heartbeat makes this node part of the live set
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-d.renewNow: // a loop found its lease past its local expiry (see lease)
			tick.Reset(d.cfg.LeaseRenewInterval)
		}
	}
}

func (d *Dispatcher) renewOnce(ctx context.Context, ttl time.Duration) {
	d.mu.Lock()
	d.renewStarts++
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		d.renewEnds++
		d.notifyLocked()
		d.mu.Unlock()
	}()
	start := time.Now()
	got, err := d.cfg.Leases.Renew(ctx)
	if err != nil {
		if ctx.Err() == nil {
			d.log.Warn("renewing leases failed; they lapse unless the next renewal succeeds", "err", err)
		}
		return
	}
	if m, ok := d.cfg.Leases.(Membership); ok {
		if live, err := m.LiveNodes(ctx); err == nil {
			d.mu.Lock()
			d.live = live
			d.mu.Unlock()
		} else if ctx.Err() == nil {
			d.log.Warn("reading the live nodes failed; keeping the last set", "err", err)
		}
	}
	var lost, handOver []string
	var retry, release []LeaseKey
	d.mu.Lock()
	// The leases renewed are marked on their states (no map of 100,000 keys per renewal).
	d.renewals++
	renewal := d.renewals
	for _, l := range got {
		k := l.key()
		st := d.conns[k]
		if st != nil && st.lease.held && st.lease.epoch == l.Epoch {
			st.lease.renewal = renewal
		}
		// A lease the engine renewed for this node but the Dispatcher does not hold (it stopped
		// trusting it, or never claimed it in this process) and another live node ranks first
		// for: release it, or it would be renewed here forever and that node never get it.
		if (st == nil || (!st.lease.held && !st.lease.claiming)) && !d.preferredLocked(k) {
			release = append(release, l.LeaseKey)
		}
	}
	for id, st := range d.conns {
		l := &st.lease
		if l.held && l.renewal == renewal {
			l.until, l.recorded = start.Add(ttl), start
			if !st.running && !d.preferredLocked(id) {
				// Balance: another live node ranks first; hand the idle connection over.
				l.held, l.foreign = false, true
				handOver = append(handOver, id)
				release = append(release, leaseKey(id))
			}
			continue
		}
		switch {
		case l.held && l.recorded.Before(start):
			// Not renewed (expired and maybe taken over): stop trusting it. (A lease granted
			// after this renewal started is left to the next one.)
			l.held, l.foreign = false, true
			lost = append(lost, id)
		case l.foreign && !l.held && d.preferredLocked(id):
			retry = append(retry, leaseKey(id))
		}
	}
	d.mu.Unlock()
	for _, id := range lost {
		d.m.leaseLost.Inc()
		d.log.Warn("lease not renewed; stopping the connection's dispatch", "connection", id)
		d.lost(id)
	}
	if len(release) > 0 {
		if err := d.cfg.Leases.Release(ctx, release); err != nil && ctx.Err() == nil {
			d.log.Warn("handing leases over failed; they expire instead", "connections", len(release), "err", err)
		}
		for _, id := range handOver {
			d.lost(id)
		}
		d.log.Info("handed idle connections over to the nodes ranking first", "connections", len(handOver))
	}
	if len(retry) == 0 {
		return
	}
	start = time.Now()
	granted, err := d.cfg.Leases.Claim(ctx, retry)
	if err != nil {
		if ctx.Err() == nil {
			d.log.Warn("claiming the leases of connections held elsewhere failed", "connections", len(retry), "err", err)
		}
		return
	}
	var wake, idle []string
	d.mu.Lock()
	for _, g := range granted {
		st := d.conns[g.key()]
		if st == nil || st.lease.held {
			continue
		}
		d.grantLocked(st, g, start, ttl)
		if st.idle {
			idle = append(idle, g.key())
		} else {
			wake = append(wake, g.key())
		}
	}
	d.mu.Unlock()
	for _, id := range wake {
		d.gained(ctx, id)
		d.Wake(id)
	}
	if len(idle) > 0 {
		// Sessions of idle connections connect in the background: connecting may take a network
		// round trip each, and the renewals must not wait for thousands of them.
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			d.gainedAll(ctx, idle)
		}()
	}
}

// grantLocked records a lease granted by a claim that started at start. Held now, but with a new
// epoch (or the first in this process) it is a takeover: the loop's lease() sees a valid lease
// and reports it, and the loop recovers the messages in flight first.
func (d *Dispatcher) grantLocked(st *connState, g Lease, start time.Time, ttl time.Duration) {
	l := &st.lease
	takeover := !l.known || l.epoch != g.Epoch
	l.held, l.foreign, l.until, l.recorded = true, false, start.Add(ttl), time.Now()
	if takeover {
		l.known, l.epoch = true, g.Epoch
		st.takeover = true
	}
}

// sessionWorkers bounds the transport sessions connected at once after a batched claim.
const sessionWorkers = 16

// gainedAll runs gained for each connection, sessionWorkers at a time.
func (d *Dispatcher) gainedAll(ctx context.Context, ids []string) {
	next := make(chan string)
	var wg sync.WaitGroup
	for range min(sessionWorkers, len(ids)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range next {
				d.gained(ctx, id)
			}
		}()
	}
	for _, id := range ids {
		next <- id
	}
	close(next)
	wg.Wait()
}

// claimChunk is the most keys one batched claim asks for.
const claimChunk = 10_000

// claimBusy claims, in batches, the leases of the connections found with work at start
// (exclusive leases only) and connects their sessions, before their loops start: each loop then
// finds its lease held instead of claiming it alone. A connection whose claim is refused is left
// to its loop (which stops) and the renewals; a failed claim leaves every connection to its loop.
func (d *Dispatcher) claimBusy(ctx context.Context, ids []string) {
	if !d.sessions() {
		return
	}
	ttl := d.cfg.Leases.TTL()
	for chunk := range slices.Chunk(ids, claimChunk) {
		var keys []LeaseKey
		d.mu.Lock()
		for _, id := range chunk {
			if st := d.conns[id]; (st == nil || !st.lease.held) && d.preferredLocked(id) {
				keys = append(keys, leaseKey(id))
			}
		}
		d.mu.Unlock()
		if len(keys) == 0 {
			continue
		}
		start := time.Now()
		granted, err := d.cfg.Leases.Claim(ctx, keys)
		if err != nil {
			if ctx.Err() == nil {
				d.log.Warn("claiming the leases of the connections with work failed; each loop claims its own", "connections", len(keys), "err", err)
			}
			return
		}
		var gained []string
		d.mu.Lock()
		for _, g := range granted {
			st := d.stateLocked(g.key())
			if st.lease.held {
				continue
			}
			d.grantLocked(st, g, start, ttl)
			gained = append(gained, g.key())
		}
		d.mu.Unlock()
		d.gainedAll(ctx, gained)
	}
}

// ReleaseLeases ends every lease of this node at once, so other nodes take its connections
// over without waiting for the expiry: the graceful shutdown, after Run returned. A crash skips
// it and the leases expire (the takeover then takes up to the TTL plus a renewal interval).
func (d *Dispatcher) ReleaseLeases(ctx context.Context) error {
	d.mu.Lock()
	for _, st := range d.conns {
		st.lease.held = false
	}
	d.mu.Unlock()
	return d.cfg.Leases.Release(ctx, nil)
}

// Held returns the leases this node holds and trusts now (not past their local expiry), sorted
// by connection key.
func (d *Dispatcher) Held() []Lease {
	now := time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []Lease
	for id, st := range d.conns {
		if d.validLocked(&st.lease, now) {
			out = append(out, Lease{LeaseKey: leaseKey(id), Epoch: st.lease.epoch})
		}
	}
	slices.SortFunc(out, func(a, b Lease) int { return strings.Compare(a.key(), b.key()) })
	return out
}

// ManagesSessions reports whether the Dispatcher connects and disconnects the transport
// sessions with its leases (exclusive leases, TTL > 0): the caller must then not connect every
// connection itself, or two nodes would run one WhatsApp session.
func (d *Dispatcher) ManagesSessions() bool { return d.sessions() }

package lease

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/waqueue/waqueue/projections/dispatcher"
)

// DefaultBucket is the JetStream key-value bucket of the NATS leases.
const DefaultBucket = "waqueue_dispatch_leases"

// natsParallel bounds the key-value requests one NATS call has in flight.
const natsParallel = 64

// NATS implements dispatcher.Leases and dispatcher.Membership with a JetStream key-value
// bucket, for deployments whose shared engines are EventStoreDB and NATS. One key per node
// ("n.<node>", base64url) holds its session {node, session, ttl, ended}; one key per connection
// ("l.<tenant>.<connection>") holds {owner, session, epoch}: the lease is valid while the owner's
// session is, and free when its session is empty (released).
//
//   - Sessions: a node's renewal rewrites its session key by a compare-and-set on the revision it
//     wrote last — one request whatever the number of leases; no lease key is written. A session
//     is live while its key names it, is not ended, and its server timestamp plus its TTL is
//     after the server's current time. A node that finds another's session expired ends it by a
//     compare-and-set before taking any of its leases, so the owner's concurrent renewal and the
//     ending cannot both succeed; a renewal that fails (the session was ended), or that finds
//     the session had expired, starts a new session holding nothing.
//   - Compare-and-set: a lease key is written with Create (it must not exist) or Update with the
//     revision read; of two concurrent claimants one wins.
//   - The engine's clock: times are JetStream's timestamps of writes, compared with the server's
//     time of the caller's own session write; the nodes' clocks are never compared. A node trusts
//     its leases until the start of its last successful session write plus the TTL (by its own
//     monotonic clock), which ends before the server sees the session expire.
//   - Epochs only grow: the bucket has no TTL (entries are never removed by age, so an epoch is
//     never forgotten), and a change of owner writes the previous epoch plus one.
//
// The leases this node holds are the ones it claimed under its current session (kept in memory
// with their revisions): no other node can take them while the session lives, so a renewal needs
// to read none. A claim makes one read (and at most one compare-and-set) per key, natsParallel at
// a time. A restarted process is a new node (its node id includes the pid) and claims afresh.
type NATS struct {
	kv   jetstream.KeyValue
	node string
	ttl  time.Duration

	beat sync.Mutex // serializes session writes
	mu   sync.Mutex // guards sess and held
	sess natsSession
	held map[dispatcher.LeaseKey]heldLease // claimed under sess.id

	locks [256]sync.Mutex // keyLock
}

// natsSession is this node's current session.
type natsSession struct {
	id      string    // "" before the first write or after Release(nil)
	rev     uint64    // revision of its last write of the session key
	written time.Time // the server's timestamp of that write
}

type heldLease struct {
	rev   uint64
	epoch uint64
}

// natsValue is the value of a lease key. A value written before node sessions has no session
// and a TTL of its own (legacy): it is held until its timestamp plus that TTL, unless released.
type natsValue struct {
	Owner    string `json:"owner"`
	Session  string `json:"session,omitempty"`
	Epoch    uint64 `json:"epoch"`
	TTLMicro int64  `json:"ttl_us,omitempty"`
	Released bool   `json:"released,omitempty"`
}

// natsNode is the value of a node's session key.
type natsNode struct {
	Node     string `json:"owner"` // "owner": the name of the heartbeat's node before sessions
	Session  string `json:"session,omitempty"`
	TTLMicro int64  `json:"ttl_us"`
	Ended    bool   `json:"ended,omitempty"`
}

var (
	_ dispatcher.Leases     = (*NATS)(nil)
	_ dispatcher.Membership = (*NATS)(nil)
)

// NewNATS returns the leases of node in the key-value bucket (DefaultBucket when empty) of js,
// creating the bucket if needed (file storage, replicas as given, at least 1, one revision kept
// per key, no expiry by age). ttl 0 means DefaultTTL.
func NewNATS(ctx context.Context, js jetstream.JetStream, bucket string, replicas int, node string, ttl time.Duration) (*NATS, error) {
	if js == nil || node == "" {
		return nil, errors.New("lease: NewNATS needs a JetStream context and a node id")
	}
	if ttl < 0 {
		return nil, fmt.Errorf("lease: negative TTL %s", ttl)
	}
	if ttl == 0 {
		ttl = DefaultTTL
	}
	if bucket == "" {
		bucket = DefaultBucket
	}
	if replicas < 1 {
		replicas = 1
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: bucket, Description: "waqueue dispatch leases (per connection) and node sessions",
		History: 1, Storage: jetstream.FileStorage, Replicas: replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("lease: key-value bucket %s: %w", bucket, err)
	}
	return &NATS{kv: kv, node: node, ttl: ttl, held: map[dispatcher.LeaseKey]heldLease{}}, nil
}

// Node returns the node id.
func (n *NATS) Node() string { return n.node }

// TTL returns the lease TTL.
func (n *NATS) TTL() time.Duration { return n.ttl }

// Session returns this node's current session id ("" when it has none): for tests and logs.
func (n *NATS) Session() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.sess.id
}

var b64 = base64.RawURLEncoding

func leaseKV(k dispatcher.LeaseKey) string {
	return "l." + b64.EncodeToString([]byte(k.Tenant)) + "." + b64.EncodeToString([]byte(k.ConnectionID))
}

func nodeKV(node string) string { return "n." + b64.EncodeToString([]byte(node)) }

func lost(err error) bool {
	return errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists)
}

// heartbeat renews this node's session, or starts a new one when it has none or it lapsed
// (another node ended it, or it expired before this write: its leases are forgotten). It returns
// the session and the server's time of the write; fresh reports a new session.
func (n *NATS) heartbeat(ctx context.Context) (id string, now time.Time, fresh bool, err error) {
	n.beat.Lock()
	defer n.beat.Unlock()
	n.mu.Lock()
	cur := n.sess
	n.mu.Unlock()
	key := nodeKV(n.node)
	if cur.id != "" {
		rev, err := n.kv.Update(ctx, key, mustJSON(natsNode{Node: n.node, Session: cur.id, TTLMicro: n.ttl.Microseconds()}), cur.rev)
		switch {
		case lost(err): // ended by another node: start anew below
		case err != nil:
			return "", time.Time{}, false, fmt.Errorf("lease: heartbeat: %w", err)
		default:
			e, err := n.kv.Get(ctx, key)
			if err != nil {
				return "", time.Time{}, false, fmt.Errorf("lease: heartbeat: %w", err)
			}
			if e.Revision() == rev && e.Created().Before(cur.written.Add(n.ttl)) {
				n.mu.Lock()
				n.sess.rev, n.sess.written = rev, e.Created()
				n.mu.Unlock()
				return cur.id, e.Created(), false, nil
			}
			// Written after it expired (nobody ended it yet), or ended right after: lapsed.
		}
	}
	id = rand.Text()
	if _, err := n.kv.Put(ctx, key, mustJSON(natsNode{Node: n.node, Session: id, TTLMicro: n.ttl.Microseconds()})); err != nil {
		return "", time.Time{}, false, fmt.Errorf("lease: start a session: %w", err)
	}
	e, err := n.kv.Get(ctx, key)
	if err != nil {
		return "", time.Time{}, false, fmt.Errorf("lease: start a session: %w", err)
	}
	var v natsNode
	if json.Unmarshal(e.Value(), &v) != nil || v.Session != id || v.Ended {
		return "", time.Time{}, false, fmt.Errorf("lease: start a session: the session key of %s changed under it", n.node)
	}
	n.mu.Lock()
	n.sess = natsSession{id: id, rev: e.Revision(), written: e.Created()}
	n.held = map[dispatcher.LeaseKey]heldLease{}
	n.mu.Unlock()
	return id, e.Created(), true, nil
}

// sessionJudge decides, within one claim, whether owners' sessions are over, reading each
// owner's session key once and ending an expired session by a compare-and-set.
type sessionJudge struct {
	n   *NATS
	now time.Time // the server's time at the start of the claim
	mu  sync.Mutex
	// over caches the verdicts per owner and session.
	over map[[2]string]bool
}

// dead reports whether owner's session is over: its key is gone, names another session, is
// ended, or expired (then this call ends it, so its node can never renew it).
func (j *sessionJudge) dead(ctx context.Context, owner, session string) (bool, error) {
	j.mu.Lock()
	v, ok := j.over[[2]string{owner, session}]
	j.mu.Unlock()
	if ok {
		return v, nil
	}
	dead, err := j.judge(ctx, owner, session)
	if err != nil {
		return false, err
	}
	j.mu.Lock()
	j.over[[2]string{owner, session}] = dead
	j.mu.Unlock()
	return dead, nil
}

func (j *sessionJudge) judge(ctx context.Context, owner, session string) (bool, error) {
	key := nodeKV(owner)
	for range 3 {
		e, err := j.n.kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return true, nil
		}
		if err != nil {
			return false, err
		}
		var v natsNode
		if err := json.Unmarshal(e.Value(), &v); err != nil {
			return false, fmt.Errorf("lease %s: bad value: %w", key, err)
		}
		if v.Session != session || v.Ended {
			return true, nil
		}
		if e.Created().Add(time.Duration(v.TTLMicro) * time.Microsecond).After(j.now) {
			return false, nil // live
		}
		v.Ended = true
		_, err = j.n.kv.Update(ctx, key, mustJSON(v), e.Revision())
		if err == nil {
			return true, nil
		}
		if !lost(err) {
			return false, err
		}
		// The owner renewed (or another node ended it) meanwhile: judge again.
	}
	return false, nil // contended: refuse for now, a later claim decides
}

// Claim grants each key nobody holds, whose owner's session is over, or that this node's session
// holds; the epoch grows by one on a change of owner node. It first renews this node's session
// (so a granted lease is valid one TTL from the claim's start).
func (n *NATS) Claim(ctx context.Context, keys []dispatcher.LeaseKey) ([]dispatcher.Lease, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	uniq := make([]dispatcher.LeaseKey, 0, len(keys))
	seen := make(map[dispatcher.LeaseKey]bool, len(keys))
	for _, k := range keys {
		if !seen[k] {
			seen[k] = true
			uniq = append(uniq, k)
		}
	}
	session, now, _, err := n.heartbeat(ctx)
	if err != nil {
		return nil, err
	}
	judge := &sessionJudge{n: n, now: now, over: map[[2]string]bool{}}
	var mu sync.Mutex
	var out []dispatcher.Lease
	err = parallel(ctx, len(uniq), func(i int) error {
		l, ok, err := n.claim1(ctx, uniq[i], session, judge)
		if err != nil || !ok {
			return err
		}
		mu.Lock()
		out = append(out, l)
		mu.Unlock()
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("lease: claim %d: %w", len(uniq), err)
	}
	return out, nil
}

// claim1 claims one key under session; ok false when another node holds it (or won a race for
// it). This node's writes of one key are serialized (keyLock), so a compare-and-set fails only
// on another node's write.
func (n *NATS) claim1(ctx context.Context, k dispatcher.LeaseKey, session string, judge *sessionJudge) (dispatcher.Lease, bool, error) {
	mu := n.keyLock(k)
	mu.Lock()
	defer mu.Unlock()
	l, rev, ok, err := n.claimOnce(ctx, k, session, judge)
	if !ok || err != nil {
		return l, false, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.sess.id != session {
		return dispatcher.Lease{}, false, nil // the session lapsed meanwhile: the grant is void
	}
	n.held[k] = heldLease{rev: rev, epoch: l.Epoch}
	return l, true, nil
}

// claimOnce reads the key and writes it by a compare-and-set when this node may claim it.
func (n *NATS) claimOnce(ctx context.Context, k dispatcher.LeaseKey, session string, judge *sessionJudge) (dispatcher.Lease, uint64, bool, error) {
	key := leaseKV(k)
	v := natsValue{Owner: n.node, Session: session, Epoch: 1}
	e, err := n.kv.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		rev, err := n.kv.Create(ctx, key, mustJSON(v))
		if lost(err) {
			return dispatcher.Lease{}, 0, false, nil // another node created it first
		}
		if err != nil {
			return dispatcher.Lease{}, 0, false, err
		}
		return dispatcher.Lease{LeaseKey: k, Epoch: v.Epoch}, rev, true, nil
	case err != nil:
		return dispatcher.Lease{}, 0, false, err
	}
	var cur natsValue
	if err := json.Unmarshal(e.Value(), &cur); err != nil {
		return dispatcher.Lease{}, 0, false, fmt.Errorf("lease %s: bad value: %w", key, err)
	}
	var free bool
	switch {
	case cur.Session == session:
		return dispatcher.Lease{LeaseKey: k, Epoch: cur.Epoch}, e.Revision(), true, nil // held already
	case cur.Released:
		free = true
	case cur.Session == "": // a lease of the per-connection expiry (before sessions)
		free = !e.Created().Add(time.Duration(cur.TTLMicro) * time.Microsecond).After(judge.now)
	default:
		if free, err = judge.dead(ctx, cur.Owner, cur.Session); err != nil {
			return dispatcher.Lease{}, 0, false, err
		}
	}
	if !free {
		return dispatcher.Lease{}, 0, false, nil
	}
	v.Epoch = cur.Epoch
	if cur.Owner != n.node {
		v.Epoch++
	}
	rev, err := n.kv.Update(ctx, key, mustJSON(v), e.Revision())
	if lost(err) {
		return dispatcher.Lease{}, 0, false, nil // another node wrote it meanwhile
	}
	if err != nil {
		return dispatcher.Lease{}, 0, false, err
	}
	return dispatcher.Lease{LeaseKey: k, Epoch: v.Epoch}, rev, true, nil
}

// Renew renews this node's session — one compare-and-set — and returns the leases claimed under
// it: no other node can have taken them while it lived, so none is read or written. When the
// session lapsed, a new one is started and nothing is returned (claim again).
func (n *NATS) Renew(ctx context.Context) ([]dispatcher.Lease, error) {
	session, _, fresh, err := n.heartbeat(ctx)
	if err != nil {
		return nil, fmt.Errorf("lease: renew: %w", err)
	}
	if fresh {
		return nil, nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.sess.id != session {
		return nil, nil
	}
	out := make([]dispatcher.Lease, 0, len(n.held))
	for k, h := range n.held {
		out = append(out, dispatcher.Lease{LeaseKey: k, Epoch: h.epoch})
	}
	return out, nil
}

// keyLock returns the mutex serializing this node's writes of k (striped).
func (n *NATS) keyLock(k dispatcher.LeaseKey) *sync.Mutex {
	h := fnv.New32a()
	_, _ = h.Write([]byte(k.Tenant))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(k.ConnectionID))
	return &n.locks[h.Sum32()%uint32(len(n.locks))]
}

// Release marks this node's leases of keys released (owner and epoch kept, so the next owner's
// claim raises the epoch), one compare-and-set each. For nil it ends the node's session instead
// (whichever handle of the node id started it) — one write: every lease of it is free at once,
// and the node leaves the live set.
func (n *NATS) Release(ctx context.Context, keys []dispatcher.LeaseKey) error {
	if keys == nil {
		n.beat.Lock()
		defer n.beat.Unlock()
		n.mu.Lock()
		n.sess, n.held = natsSession{}, map[dispatcher.LeaseKey]heldLease{}
		n.mu.Unlock()
		// The node's session key, whichever handle wrote it last.
		e, err := n.kv.Get(ctx, nodeKV(n.node))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("lease: release: %w", err)
		}
		var v natsNode
		if json.Unmarshal(e.Value(), &v) != nil || v.Ended {
			return nil
		}
		v.Ended = true
		if _, err := n.kv.Update(ctx, nodeKV(n.node), mustJSON(v), e.Revision()); err != nil && !lost(err) {
			return fmt.Errorf("lease: release: %w", err)
		}
		return nil // (lost: the session was renewed or ended meanwhile; ended by another node, or renewed by a handle still in use)
	}
	err := parallel(ctx, len(keys), func(i int) error {
		k := keys[i]
		mu := n.keyLock(k)
		mu.Lock()
		defer mu.Unlock()
		n.mu.Lock()
		h, ok := n.held[k]
		delete(n.held, k)
		n.mu.Unlock()
		if !ok {
			return nil
		}
		v := natsValue{Owner: n.node, Session: "", Epoch: h.epoch, Released: true}
		_, err := n.kv.Update(ctx, leaseKV(k), mustJSON(v), h.rev)
		if lost(err) {
			return nil // another node's now
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("lease: release: %w", err)
	}
	return nil
}

// LiveNodes returns the nodes whose session is live by the server's clock, sorted.
func (n *NATS) LiveNodes(ctx context.Context) ([]string, error) {
	now, err := n.serverNow(ctx, "c."+b64.EncodeToString([]byte(n.node)), nil)
	if err != nil {
		return nil, err
	}
	lister, err := n.kv.ListKeysFiltered(ctx, "n.>")
	if err != nil {
		return nil, fmt.Errorf("lease: live nodes: %w", err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	_ = lister.Stop() // the channel closed: the watcher is stopped already (Stop reports it so)
	if ctx.Err() != nil {
		return nil, ctx.Err() // the list may be cut short
	}
	var out []string
	for _, k := range keys {
		e, err := n.kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("lease: live nodes: %w", err)
		}
		var v natsNode
		if json.Unmarshal(e.Value(), &v) != nil || v.Node == "" || v.Ended {
			continue
		}
		if e.Created().Add(time.Duration(v.TTLMicro) * time.Microsecond).After(now) {
			out = append(out, v.Node)
		}
	}
	sort.Strings(out)
	return out, nil
}

// serverNow writes key and returns the server's timestamp of that write: the server's current
// time, as near as one round trip allows (never later than the server's clock when it returns).
func (n *NATS) serverNow(ctx context.Context, key string, value []byte) (time.Time, error) {
	if _, err := n.kv.Put(ctx, key, value); err != nil {
		return time.Time{}, fmt.Errorf("lease: write %s: %w", key, err)
	}
	e, err := n.kv.Get(ctx, key)
	if err != nil {
		return time.Time{}, fmt.Errorf("lease: read %s: %w", key, err)
	}
	return e.Created(), nil
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // structs of strings, integers and bools always marshal
	}
	return b
}

// parallel runs f(0..n-1), natsParallel at a time, and returns the errors joined.
func parallel(ctx context.Context, n int, f func(i int) error) error {
	if n == 0 {
		return nil
	}
	sem := make(chan struct{}, natsParallel)
	var mu sync.Mutex
	var errs []string
	var first error
	var wg sync.WaitGroup
	for i := range n {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := f(i); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				errs = append(errs, err.Error())
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if first != nil {
		if len(errs) > 1 {
			return fmt.Errorf("%w (and %d more: %s)", first, len(errs)-1, strings.Join(errs[1:min(len(errs), 4)], "; "))
		}
		return first
	}
	return ctx.Err()
}

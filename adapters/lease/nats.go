package lease

import (
	"context"
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
// bucket, for deployments whose shared engines are EventStoreDB and NATS. One key per
// connection ("l.<tenant>.<connection>", base64url) holds {owner, epoch, ttl, released}; one key
// per node ("n.<node>") is its heartbeat.
//
//   - Compare-and-set: a claim writes with Create (the key must not exist) or Update with the
//     revision it read; a concurrent writer makes it fail, so two nodes never both win.
//   - The engine's clock: an entry's expiry is its server timestamp (the time JetStream stored
//     it) plus the TTL its writer recorded, compared with the server's current time, which a
//     call learns by writing a key of its own and reading back its timestamp. The nodes' clocks
//     are never compared with each other; a node trusts its own lease only until the start of
//     its last successful write plus the TTL (by its own monotonic clock), which ends before the
//     server sees the entry expire.
//   - Epochs only grow: the bucket has no TTL (entries are never removed by age, so an epoch is
//     never forgotten), and a change of owner writes the previous epoch plus one.
//
// Unlike PostgreSQL, JetStream has no multi-key statement: a call makes one compare-and-set per
// key, natsParallel at a time. The leases this node holds are the ones it wrote last (kept in
// memory with their revisions): a restarted process is a new node (its node id includes the pid)
// and claims afresh.
type NATS struct {
	kv   jetstream.KeyValue
	node string
	ttl  time.Duration

	mu    sync.Mutex
	held  map[dispatcher.LeaseKey]heldLease
	locks [256]sync.Mutex // keyLock
}

type heldLease struct {
	rev   uint64
	epoch uint64
	at    time.Time // start of the write that set rev (local monotonic clock)
}

// natsValue is the value of a lease key.
type natsValue struct {
	Owner    string `json:"owner"`
	Epoch    uint64 `json:"epoch"`
	TTLMicro int64  `json:"ttl_us"`
	Released bool   `json:"released,omitempty"`
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
		Bucket: bucket, Description: "waqueue dispatch leases (per connection) and node heartbeats",
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

var b64 = base64.RawURLEncoding

func leaseKV(k dispatcher.LeaseKey) string {
	return "l." + b64.EncodeToString([]byte(k.Tenant)) + "." + b64.EncodeToString([]byte(k.ConnectionID))
}

func nodeKV(node string) string { return "n." + b64.EncodeToString([]byte(node)) }

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

// Claim grants each key nobody holds, whose lease expired or was released, or that this node
// holds, by a compare-and-set on the revision read; the epoch grows by one on a change of owner.
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
	now, err := n.serverNow(ctx, "c."+b64.EncodeToString([]byte(n.node)), nil)
	if err != nil {
		return nil, err
	}
	var mu sync.Mutex
	var out []dispatcher.Lease
	err = parallel(ctx, len(uniq), func(i int) error {
		l, _, ok, err := n.claim1(ctx, uniq[i], now)
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

// claim1 claims one key; ok false when another node holds it (or won a race for it). This
// node's writes of one key are serialized (keyLock), so a compare-and-set fails only on another
// node's write.
func (n *NATS) claim1(ctx context.Context, k dispatcher.LeaseKey, now time.Time) (dispatcher.Lease, uint64, bool, error) {
	mu := n.keyLock(k)
	mu.Lock()
	defer mu.Unlock()
	start := time.Now()
	l, rev, ok, err := n.claimOnce(ctx, k, now)
	if ok {
		n.mu.Lock()
		n.held[k] = heldLease{rev: rev, epoch: l.Epoch, at: start}
		n.mu.Unlock()
	}
	return l, rev, ok, err
}

// claimOnce reads the key and writes it by a compare-and-set when this node may claim it.
func (n *NATS) claimOnce(ctx context.Context, k dispatcher.LeaseKey, now time.Time) (dispatcher.Lease, uint64, bool, error) {
	key := leaseKV(k)
	v := natsValue{Owner: n.node, Epoch: 1, TTLMicro: n.ttl.Microseconds()}
	e, err := n.kv.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		rev, err := n.kv.Create(ctx, key, mustJSON(v))
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
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
	expired := cur.Released || !e.Created().Add(time.Duration(cur.TTLMicro)*time.Microsecond).After(now)
	switch {
	case cur.Owner == n.node:
		v.Epoch = cur.Epoch
	case expired:
		v.Epoch = cur.Epoch + 1
	default:
		return dispatcher.Lease{}, 0, false, nil
	}
	rev, err := n.kv.Update(ctx, key, mustJSON(v), e.Revision())
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
		return dispatcher.Lease{}, 0, false, nil // another node wrote it meanwhile
	}
	if err != nil {
		return dispatcher.Lease{}, 0, false, err
	}
	return dispatcher.Lease{LeaseKey: k, Epoch: v.Epoch}, rev, true, nil
}

// Renew writes this node's heartbeat and extends, each by a compare-and-set on the revision this
// node wrote last, every lease it holds that has not expired by its own clock; a lease another
// node wrote meanwhile, or one expired, is dropped (claim it again).
func (n *NATS) Renew(ctx context.Context) ([]dispatcher.Lease, error) {
	if _, err := n.kv.Put(ctx, nodeKV(n.node), mustJSON(natsValue{Owner: n.node, TTLMicro: n.ttl.Microseconds()})); err != nil {
		return nil, fmt.Errorf("lease: heartbeat: %w", err)
	}
	now := time.Now()
	n.mu.Lock()
	var keys []dispatcher.LeaseKey
	for k, h := range n.held {
		if now.Sub(h.at) >= n.ttl {
			delete(n.held, k) // expired: another node may take it; a claim decides
			continue
		}
		keys = append(keys, k)
	}
	n.mu.Unlock()
	var mu sync.Mutex
	var out []dispatcher.Lease
	err := parallel(ctx, len(keys), func(i int) error {
		epoch, ok, err := n.renew1(ctx, keys[i])
		if err != nil || !ok {
			return err
		}
		mu.Lock()
		out = append(out, dispatcher.Lease{LeaseKey: keys[i], Epoch: epoch})
		mu.Unlock()
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("lease: renew: %w", err)
	}
	return out, nil
}

// renew1 extends one lease by a compare-and-set on the revision this node wrote last (its
// writes of one key are serialized, keyLock) and returns its epoch. ok is false when the lease
// was released meanwhile or another node wrote the key (then it is lost: forgotten here).
func (n *NATS) renew1(ctx context.Context, k dispatcher.LeaseKey) (epoch uint64, ok bool, err error) {
	mu := n.keyLock(k)
	mu.Lock()
	defer mu.Unlock()
	n.mu.Lock()
	h, held := n.held[k]
	n.mu.Unlock()
	if !held {
		return 0, false, nil
	}
	start := time.Now()
	v := mustJSON(natsValue{Owner: n.node, Epoch: h.epoch, TTLMicro: n.ttl.Microseconds()})
	rev, err := n.kv.Update(ctx, leaseKV(k), v, h.rev)
	lost := errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists)
	if err != nil && !lost {
		return 0, false, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if lost {
		delete(n.held, k)
		return 0, false, nil
	}
	n.held[k] = heldLease{rev: rev, epoch: h.epoch, at: start}
	return h.epoch, true, nil
}

// keyLock returns the mutex serializing this node's writes of k (striped).
func (n *NATS) keyLock(k dispatcher.LeaseKey) *sync.Mutex {
	h := fnv.New32a()
	_, _ = h.Write([]byte(k.Tenant))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(k.ConnectionID))
	return &n.locks[h.Sum32()%uint32(len(n.locks))]
}

// Release marks this node's leases of keys (all of them for nil, and then its heartbeat is
// deleted) released, keeping owner and epoch, so the next owner's claim raises the epoch.
func (n *NATS) Release(ctx context.Context, keys []dispatcher.LeaseKey) error {
	all := keys == nil
	if all {
		n.mu.Lock()
		for k := range n.held {
			keys = append(keys, k)
		}
		n.mu.Unlock()
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
		v := natsValue{Owner: n.node, Epoch: h.epoch, TTLMicro: n.ttl.Microseconds(), Released: true}
		_, err := n.kv.Update(ctx, leaseKV(k), mustJSON(v), h.rev)
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
			return nil // another node's now
		}
		return err
	})
	if all {
		if derr := n.kv.Delete(ctx, nodeKV(n.node)); derr != nil && !errors.Is(derr, jetstream.ErrKeyNotFound) {
			err = errors.Join(err, derr)
		}
	}
	if err != nil {
		return fmt.Errorf("lease: release: %w", err)
	}
	return nil
}

// LiveNodes returns the nodes whose heartbeat has not expired by the server's clock, sorted.
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
		var v natsValue
		if json.Unmarshal(e.Value(), &v) != nil || v.Owner == "" {
			continue
		}
		if e.Created().Add(time.Duration(v.TTLMicro) * time.Microsecond).After(now) {
			out = append(out, v.Owner)
		}
	}
	sort.Strings(out)
	return out, nil
}

func mustJSON(v natsValue) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // a struct of strings, integers and a bool always marshals
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

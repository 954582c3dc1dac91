package dispatcher

import (
	"context"
	"hash/fnv"
	"sync"
	"time"
)

// LeaseKey names one connection's lease: its tenant and its id within the tenant (the bare id,
// not the tenant-scoped key).
type LeaseKey struct {
	Tenant       string
	ConnectionID string
}

// Lease is a lease a node holds on a connection. Epoch is its fencing token: it only grows, by
// one each time the lease changes owner, and the Dispatcher records it on every hand-over
// (MessageDispatched, MessageSendRetried) so the domain refuses a stale owner's hand-over
// (connection.ErrStaleEpoch).
type Lease struct {
	LeaseKey
	Epoch uint64
}

// Leases is the port through which a Dispatcher holds per-connection leases, so that each
// connection's send loop (and its transport session) runs on one node at a time. An adapter is
// bound to one node id and one TTL. Each connection's lease is tied to its owner node's session
// (as etcd attaches keys to a lease): the node keeps one session alive, and a lease is valid
// exactly while its owner's session is, so renewing costs the same for 1 lease or 100,000.
//
// Contract (checked by the leasetest conformance suite):
//   - Claim renews (or starts) this node's session, so a lease granted is valid one TTL from the
//     claim's start, and grants a key when nobody holds it, its owner's session is over (expired
//     by the engine's clock, or ended), or this node's session holds it; the epoch is unchanged
//     when this node held it last and one more than the previous epoch when the owner changes (1
//     for a new key). A key held under another live session is not granted (and not changed).
//   - Renew extends this node's session by one TTL and returns the leases held under it. When the
//     session lapsed (it expired, or another node ended it to take a lease over), every lease of
//     it is lost at once: Renew starts a new session and returns nothing; claim again. A lapsed
//     session never comes back.
//   - Release ends this node's leases of keys at once, keeping their epoch, so another node claims
//     them without waiting for the expiry; Release(nil) ends the node's session (every lease of
//     it) and takes the node out of the live set.
//   - Expiry is judged by the engine's clock, never by the nodes' clocks.
type Leases interface {
	// Node is this node's id.
	Node() string
	// TTL is how long a claim or renewal lasts. Zero means the leases never expire and exclude
	// nobody (one node by nature): the Dispatcher then needs no renewals and manages no sessions.
	TTL() time.Duration
	// Claim claims or renews the leases of keys and returns those granted.
	Claim(ctx context.Context, keys []LeaseKey) ([]Lease, error)
	// Renew extends this node's session and returns the leases held under it.
	Renew(ctx context.Context) ([]Lease, error)
	// Release ends this node's leases of keys (every one of them when keys is nil).
	Release(ctx context.Context, keys []LeaseKey) error
}

// SingleNode is the Leases of a deployment with one dispatching process by nature (SQLite read
// models): every claim is granted with epoch 0, leases never expire (TTL 0) and exclude nobody.
// It keeps what was claimed so Renew and Release behave as the contract says.
type SingleNode struct {
	mu   sync.Mutex
	held map[LeaseKey]bool
}

var _ Leases = (*SingleNode)(nil)

// Node returns "local".
func (*SingleNode) Node() string { return "local" }

// TTL returns 0: the leases never expire.
func (*SingleNode) TTL() time.Duration { return 0 }

// Claim grants every key with epoch 0.
func (s *SingleNode) Claim(_ context.Context, keys []LeaseKey) ([]Lease, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held == nil {
		s.held = map[LeaseKey]bool{}
	}
	out := make([]Lease, 0, len(keys))
	for _, k := range keys {
		s.held[k] = true
		out = append(out, Lease{LeaseKey: k})
	}
	return out, nil
}

// Renew returns every lease claimed and not released.
func (s *SingleNode) Renew(context.Context) ([]Lease, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Lease, 0, len(s.held))
	for k := range s.held {
		out = append(out, Lease{LeaseKey: k})
	}
	return out, nil
}

// Release forgets keys (every key for nil).
func (s *SingleNode) Release(_ context.Context, keys []LeaseKey) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if keys == nil {
		s.held = nil
		return nil
	}
	for _, k := range keys {
		delete(s.held, k)
	}
	return nil
}

// Membership is implemented by Leases adapters that know the live nodes, for balancing: the
// Dispatcher then claims only the connections it ranks first among the live nodes (Rendezvous)
// and hands over, when idle, those another live node ranks first.
type Membership interface {
	// LiveNodes returns the ids of the nodes whose session is live (a node's Renew or Claim
	// extends it by one TTL; Release(nil) ends it).
	LiveNodes(ctx context.Context) ([]string, error)
}

// Rendezvous returns the node of nodes that ranks first for the connection with key connKey
// (highest-random-weight hashing: a node joining or leaving moves only the connections it
// ranks first); "" for no nodes. Every node computes the same answer from the same set.
func Rendezvous(connKey string, nodes []string) string {
	best, bestW := "", uint64(0)
	for _, n := range nodes {
		h := fnv.New64a()
		_, _ = h.Write([]byte(n))
		_, _ = h.Write([]byte{0})
		_, _ = h.Write([]byte(connKey))
		w := mix(h.Sum64())
		if best == "" || w > bestW || (w == bestW && n < best) {
			best, bestW = n, w
		}
	}
	return best
}

// mix is the splitmix64 finalizer: FNV alone spreads close strings poorly in the high bits.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

package connection_test

import (
	"testing"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/domain/connection"
)

func TestStreamName(t *testing.T) {
	if got := connection.StreamName("c1"); got != "connection-c1" {
		t.Fatalf("StreamName = %q", got)
	}
	if id, ok := connection.IDFromStream(connection.StreamName("c-1")); !ok || id != "c-1" {
		t.Fatalf("IDFromStream = %q, %v", id, ok)
	}
	for _, s := range []string{"connection-", "tenant-c1", ""} {
		if _, ok := connection.IDFromStream(s); ok {
			t.Errorf("IDFromStream(%q) accepted", s)
		}
	}
}

// TestKeyScopesIDsToTheTenant pins the stream names (stored streams depend on them) and shows
// that ids containing the old separator '-' cannot make two tenants' streams meet.
func TestKeyScopesIDsToTheTenant(t *testing.T) {
	for _, c := range []struct{ tenant, id, stream string }{
		{"default", "shop-1", "connection-shop-1"}, // legacy streams keep their names
		{"acme", "shop-1", "connection-acme:shop-1"},
		{"a-b", "c", "connection-a-b:c"},
		{"a", "b-c", "connection-a:b-c"},
		{"default", "default:shop-1", "connection-shop-1"},           // a key of the same tenant
		{"acme", "acme:shop-1", "connection-acme:shop-1"},            // a key of the same tenant
		{"default", "acme:shop-1", "connection-default:acme:shop-1"}, // another tenant's key: qualified again
		{"acme", "default:shop-1", "connection-acme:default:shop-1"},
		{"acme", "other:x", "connection-acme:other:x"},
	} {
		key := connection.Key(c.tenant, c.id)
		if got := connection.StreamName(key); got != c.stream {
			t.Errorf("StreamName(Key(%q, %q)) = %q, want %q", c.tenant, c.id, got, c.stream)
		}
		if tenant, _ := connection.SplitKey(key); tenant != c.tenant {
			t.Errorf("SplitKey(%q) tenant = %q, want %q", key, tenant, c.tenant)
		}
	}
}

// FuzzKey: for any tenant and valid id, the key splits back to exactly (tenant, id); keys of
// different (tenant, id) pairs differ; and no ref a caller of one tenant passes names a
// connection of another tenant.
func FuzzKey(f *testing.F) {
	f.Add("default", "shop-1", "acme", "shop-1")
	f.Add("a-b", "c", "a", "b-c")
	f.Add("acme", "default:x", "default", "x")
	f.Add("t.1", "..", "t", "1..")
	f.Add("t", "x", "t", "default:x")
	f.Fuzz(func(t *testing.T, t1, id1, t2, ref string) {
		valid := func(s string) bool { return connection.ValidateID("x", s) == nil }
		if !valid(t1) || !valid(t2) {
			return
		}
		if valid(id1) {
			k := connection.Key(t1, id1)
			if gt, gid := connection.SplitKey(k); gt != t1 || gid != id1 {
				t.Fatalf("SplitKey(Key(%q, %q)) = (%q, %q)", t1, id1, gt, gid)
			}
			if err := connection.ValidateKey("k", k); err != nil {
				t.Fatalf("ValidateKey(Key(%q, %q)): %v", t1, id1, err)
			}
			if connection.Key(t1, k) != k {
				t.Fatalf("Key(%q, %q) is not stable for its own key", t1, k)
			}
			if valid(ref) && (t1 != t2 || id1 != ref) && connection.Key(t2, ref) == k {
				t.Fatalf("Key(%q, %q) == Key(%q, %q)", t2, ref, t1, id1)
			}
		}
		if connection.ValidateKey("k", ref) == nil {
			if gt, gid := connection.SplitKey(ref); connection.Key(gt, gid) != ref {
				t.Fatalf("valid key %q is not Key(%q, %q)", ref, gt, gid)
			}
		}
		// Whatever a caller of t2 passes, the key never names a connection of another tenant.
		if gt, gid := connection.SplitKey(connection.Key(t2, ref)); gt != t2 && valid(gid) {
			t.Fatalf("Key(%q, %q) names tenant %q", t2, ref, gt)
		}
	})
}

// TestDerivedIDsAreStable pins derived ids: stored events depend on them, so a change of the
// namespace or the derivation must fail here.
func TestDerivedIDsAreStable(t *testing.T) {
	want := uuid.NewSHA1(uuid.MustParse("2c1fed8b-3ded-4105-ab03-9915b3fa7f85"), []byte("message\x00t1\x00c1\x00k1\x00"))
	if got := connection.MessageIDFor("t1", "c1", "k1"); got != want {
		t.Fatalf("MessageIDFor = %s, want %s", got, want)
	}
	if connection.MessageIDFor("t1", "c1", "k1").Version() != 5 {
		t.Fatal("not a UUIDv5")
	}
}

func TestDerivedIDsAreDistinct(t *testing.T) {
	ids := map[uuid.UUID]string{}
	add := func(name string, id uuid.UUID) {
		t.Helper()
		if other, dup := ids[id]; dup {
			t.Fatalf("%s and %s share id %s", name, other, id)
		}
		ids[id] = name
	}
	add("msg t1/c1/k1", connection.MessageIDFor("t1", "c1", "k1"))
	add("msg t2/c1/k1", connection.MessageIDFor("t2", "c1", "k1"))
	add("msg t1/c2/k1", connection.MessageIDFor("t1", "c2", "k1"))
	add("msg t1/c1k/1", connection.MessageIDFor("t1", "c1k", "1"))
	add("broadcast t1/c1/k1", connection.BroadcastIDFor("t1", "c1", "k1"))
	add("clear t1/c1/k1", connection.ClearIDFor("t1", "c1", "k1"))
	b := connection.BroadcastIDFor("t1", "c1", "k1")
	add("bmsg 0", connection.BroadcastMessageID(b, 0))
	add("bmsg 1", connection.BroadcastMessageID(b, 1))
	add("bmsg 10", connection.BroadcastMessageID(b, 10))
}

func TestEventID(t *testing.T) {
	stream := connection.StreamName(connID)
	q := queued(1)
	if connection.EventID(stream, 3, q) != connection.EventID(stream, 9, q) {
		t.Fatal("MessageQueued id depends on the revision: a retried enqueue would not be recognised")
	}
	d := dispatched(msgID(1), 1)
	if connection.EventID(stream, 4, d) == connection.EventID(stream, 4, q) {
		t.Fatal("MessageDispatched and MessageQueued of one message share an id")
	}
	if connection.EventID(stream, 4, d) != connection.EventID(stream, 8, dispatched(msgID(1), 1)) {
		t.Fatal("a second MessageDispatched of one message gets a new id: the store would not refuse it")
	}
	h := opHeld()
	if connection.EventID(stream, 5, h) != connection.EventID(stream, 5, opHeld()) {
		t.Fatal("EventID is not deterministic")
	}
	if connection.EventID(stream, 5, h) == connection.EventID(stream, 6, h) {
		t.Fatal("QueueHeld at two revisions shares an id")
	}
	if connection.EventID(stream, 5, h) == connection.EventID(connection.StreamName("c2"), 5, h) {
		t.Fatal("QueueHeld of two streams shares an id")
	}
	if connection.EventID(stream, 0, reg) == uuid.Nil {
		t.Fatal("nil event id")
	}
}

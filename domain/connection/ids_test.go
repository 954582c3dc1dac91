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

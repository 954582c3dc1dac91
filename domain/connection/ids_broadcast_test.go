package connection_test

import (
	"math"
	"testing"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/domain/connection"
)

// TestBroadcastMessageIDsLikeBroadcastMessageID checks the prefix-hashed derivation against
// BroadcastMessageID over indexes of every length and several broadcasts.
func TestBroadcastMessageIDsLikeBroadcastMessageID(t *testing.T) {
	for _, b := range []uuid.UUID{uuid.Nil, uuid.MustParse("6ba7b810-9dad-11d1-80b4-00c04fd430c8"), uuid.New()} {
		ids := connection.NewBroadcastMessageIDs(b)
		if ids.Broadcast() != b {
			t.Fatalf("Broadcast() = %s, want %s", ids.Broadcast(), b)
		}
		for _, i := range []int{0, 1, 9, 10, 99, 4999, 5000, 99_999, 1_000_000, math.MaxInt32, math.MaxInt, -1} {
			if got, want := ids.ID(i), connection.BroadcastMessageID(b, i); got != want {
				t.Fatalf("broadcast %s index %d: %s, want %s", b, i, got, want)
			}
		}
	}
}

func BenchmarkBroadcastMessageIDs(b *testing.B) {
	bid := uuid.New()
	ids := connection.NewBroadcastMessageIDs(bid)
	b.Run("prefix", func(b *testing.B) {
		i := 0
		for b.Loop() {
			_ = ids.ID(i)
			i++
		}
	})
	b.Run("BroadcastMessageID", func(b *testing.B) {
		i := 0
		for b.Loop() {
			_ = connection.BroadcastMessageID(bid, i)
			i++
		}
	})
}

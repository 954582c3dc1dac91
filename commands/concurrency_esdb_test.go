package commands

import (
	"context"
	"os"
	"strconv"
	"testing"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/eventstore/esdb"
	"github.com/waqueue/waqueue/adapters/eventstore/esdb/esdbtest"
)

// openESDB opens the EventStoreDB adapter on the in-process esdbtest server (real client, real
// gRPC, SQLite behind the server), or on the server in ESDB_URL when that is set (an empty node:
// the run's connection id is fixed, so a second run on the same data is refused). Every command
// of the run then goes through the adapter's expected-revision mapping and wrong-expected-version
// answers, which is what the G1 fence rests on.
func openESDB(t testing.TB) eventstore.Store {
	t.Helper()
	url := os.Getenv("ESDB_URL")
	if url == "" {
		url = esdbtest.Start(t)
	}
	st, err := esdb.New(context.Background(), url, esdb.Options{})
	if err != nil {
		t.Fatalf("esdb: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// TestConcurrencyInvariantsESDB is TestConcurrencyInvariants on the EventStoreDB adapter:
// clears, holds, bans and two dispatchers race many enqueuers through the adapter, and the
// invariant checker verifies G1, G2, G3, G5 and G7 over the stored history and every send.
// The volumes are the other engines': 10,000 messages, 2,000 with -short (the race run).
func TestConcurrencyInvariantsESDB(t *testing.T) {
	seed := uint64(20261125)
	if s := os.Getenv(envSeed); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: %v", envSeed, s, err)
		}
		seed = v
	}
	target := 10_000
	if testing.Short() {
		target = 2_000
	}
	unfenced := os.Getenv(envUnfenced) == "1"
	t.Logf("seed %d (override with %s), %d messages, unfenced dispatch %v", seed, envSeed, target, unfenced)
	runConcurrency(t, openESDB(t), seed, target, unfenced, os.Getenv(envUnfencedRetry) == "1")
}

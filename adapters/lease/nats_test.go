package lease_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/waqueue/waqueue/adapters/lease"
	"github.com/waqueue/waqueue/projections/dispatcher"
	"github.com/waqueue/waqueue/projections/dispatcher/leasetest"
)

// startNATS runs a real NATS server with JetStream in process, on a random port, and returns
// a JetStream context on it.
func startNATS(t *testing.T) jetstream.JetStream {
	t.Helper()
	s, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true, StoreDir: t.TempDir(), NoSigs: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// TestNATS runs the lease conformance suite on JetStream key-value leases: each subtest gets a
// bucket of its own on one in-process server.
func TestNATS(t *testing.T) {
	js := startNATS(t)
	n := 0
	leasetest.Run(t, func(t *testing.T) leasetest.Opener {
		n++
		bucket := fmt.Sprintf("leases_%d", n)
		return func(node string, ttl time.Duration) dispatcher.Leases {
			l, err := lease.NewNATS(context.Background(), js, bucket, 1, node, ttl)
			if err != nil {
				t.Fatal(err)
			}
			return l
		}
	}, true)
}

// A renewal is one write of the node's session key whatever the number of leases: no lease key
// is written (their revisions stay the claim's), so 100,000 leases cost what one does.
func TestNATSRenewalWritesNoLeaseKey(t *testing.T) {
	ctx := context.Background()
	js := startNATS(t)
	a, err := lease.NewNATS(ctx, js, "renew", 1, "a", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	keys := make([]dispatcher.LeaseKey, 500)
	for i := range keys {
		keys[i] = dispatcher.LeaseKey{Tenant: "t1", ConnectionID: fmt.Sprint("c", i)}
	}
	if got, err := a.Claim(ctx, keys); err != nil || len(got) != len(keys) {
		t.Fatalf("claimed %d of %d: %v", len(got), len(keys), err)
	}
	kv, err := js.KeyValue(ctx, "renew")
	if err != nil {
		t.Fatal(err)
	}
	status := func() uint64 {
		t.Helper()
		s, err := kv.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return s.(*jetstream.KeyValueBucketStatus).StreamInfo().State.LastSeq
	}
	before := status()
	for range 3 {
		got, err := a.Renew(ctx)
		if err != nil || len(got) != len(keys) {
			t.Fatalf("renewed %d of %d: %v", len(got), len(keys), err)
		}
	}
	// Three renewals: three writes to the bucket (the session key), not 3 × 500.
	if writes := status() - before; writes != 3 {
		t.Fatalf("three renewals of %d leases wrote %d entries, want 3 (one session write each)", len(keys), writes)
	}
}

// Lease values written before node sessions (an owner and a TTL of their own) are honoured while
// unexpired and taken over with the epoch plus one when released: epochs keep growing across the
// upgrade.
func TestNATSLegacyLeaseValues(t *testing.T) {
	ctx := context.Background()
	js := startNATS(t)
	a, err := lease.NewNATS(ctx, js, "legacy", 1, "a", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, "legacy")
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.RawURLEncoding
	put := func(conn, value string) {
		if _, err := kv.Put(ctx, "l."+b64.EncodeToString([]byte("t1"))+"."+b64.EncodeToString([]byte(conn)), []byte(value)); err != nil {
			t.Fatal(err)
		}
	}
	put("held", `{"owner":"old","epoch":7,"ttl_us":3600000000}`)
	put("released", `{"owner":"old","epoch":7,"ttl_us":3600000000,"released":true}`)
	got, err := a.Claim(ctx, []dispatcher.LeaseKey{{Tenant: "t1", ConnectionID: "held"}, {Tenant: "t1", ConnectionID: "released"}})
	if err != nil || len(got) != 1 || got[0].ConnectionID != "released" || got[0].Epoch != 8 {
		t.Fatalf("claims over legacy values: %v %v, want only the released one, epoch 8", got, err)
	}
}

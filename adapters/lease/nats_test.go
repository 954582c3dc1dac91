package lease_test

import (
	"context"
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

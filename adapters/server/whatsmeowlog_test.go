package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/waqueue/waqueue/adapters/server"
	wmtransport "github.com/waqueue/waqueue/adapters/whatsmeow"
	"github.com/waqueue/waqueue/internal/testwait"
)

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// TestWhatsmeowLogsReachTheNodeLogger: the composition root gives the whatsmeow transport the
// node's logger (issue 11.10; before, the manager got none and whatsmeow's logs were dropped).
func TestWhatsmeowLogsReachTheNodeLogger(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Limit)
	defer cancel()
	var buf syncBuffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	node := newNode(ctx, t, server.Options{Transport: server.TransportWhatsmeow, NoDispatcher: true, Logger: log})
	m, ok := node.Transport.(*wmtransport.Manager)
	if !ok {
		t.Fatalf("transport is %T, want the whatsmeow manager", node.Transport)
	}
	m.Logger().Sub("conn-7").Sub("Recv").Warnf("socket closed: %d", 1006)
	m.Logger().Sub("conn-7").Debugf("below the node's level")

	var found bool
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil {
			continue
		}
		if rec["msg"] == "below the node's level" {
			t.Errorf("debug record logged at level info: %s", line)
		}
		if rec["msg"] == "socket closed: 1006" {
			found = true
			if rec["level"] != "WARN" || rec[wmtransport.ModuleKey] != "conn-7/Recv" || rec["component"] != "whatsmeow" {
				t.Errorf("record %s: want level WARN, module conn-7/Recv, component whatsmeow", line)
			}
		}
	}
	if !found {
		t.Fatalf("whatsmeow's warning did not reach the node's logger; log:\n%s", buf.String())
	}
}

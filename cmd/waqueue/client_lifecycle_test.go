package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/waqueue/waqueue/adapters/httpapi/apitest"
	"github.com/waqueue/waqueue/client"
	"github.com/waqueue/waqueue/internal/testwait"
)

// TestConnectionsLogoutRetireAndKeyRole drives the lifecycle commands against a real server:
// logout of a connection never paired deletes nothing remote; retire asks for the phone number, is refused while messages are
// pending, retires after --clear-first's clear; keys role changes a key's rights at once.
func TestConnectionsLogoutRetireAndKeyRole(t *testing.T) {
	srv, dir := startServer(t)
	const phone = "+491701234567"
	mustCLI(t, srv, dir, "connections", "register", "--phone", phone, "--id", "shop-1")
	mustCLI(t, srv, dir, "send", "shop-1", "--to", "+491709876543", "--text", "hi", "--idempotency-key", "o-1")

	out := mustCLI(t, srv, dir, "connections", "logout", "shop-1")
	if !strings.Contains(out, "logged out connection shop-1 ("+phone+"): the session was not connected") || !strings.Contains(out, "link unpaired") {
		t.Fatalf("connections logout printed %q", out)
	}
	var lo client.LoggedOut
	if err := json.Unmarshal([]byte(mustCLI(t, srv, dir, "connections", "logout", "shop-1", "--json")), &lo); err != nil || lo.ID != "shop-1" || lo.RemoteLogout || lo.LinkStatus != "unpaired" {
		t.Fatalf("connections logout --json (a retry) = %+v, %v; want shop-1 unpaired, no remote logout", lo, err)
	}

	// A wrong confirmation changes nothing.
	_, errOut, err := cli(t, srv, dir, "+490000000000\n", "connections", "retire", "shop-1", "--reason", "number returned")
	if !errors.Is(err, errRetireAborted) || !strings.Contains(errOut, "("+phone+") to confirm") || !strings.Contains(errOut, "1 pending") {
		t.Fatalf("retire with a wrong phone: err %v, prompt %q; want errRetireAborted after a prompt naming the pending message", err, errOut)
	}
	// A queue with a pending message is refused with the API's code.
	var p *client.Problem
	if _, _, err := cli(t, srv, dir, phone+"\n", "connections", "retire", "shop-1", "--reason", "number returned"); !errors.As(err, &p) || p.Code != "queue_not_empty" {
		t.Fatalf("retire of a queue with a pending message: %v, want queue_not_empty", err)
	}
	if c, err := cardOf(t, srv, dir, "shop-1"); err != nil || c.LinkStatus == "retired" || c.Pending != 1 {
		t.Fatalf("after refused retires: %+v, %v; want the connection not retired", c, err)
	}
	out = mustCLI(t, srv, dir, "connections", "retire", "shop-1", "--reason", "number returned", "--clear-first", "--yes")
	if !regexp.MustCompile(`connection shop-1 is retiring: clear \S+ runs first, then it retires`).MatchString(out) {
		t.Fatalf("retire --clear-first printed %q", out)
	}
	waitCard(t, srv, dir, "shop-1", func(c client.Card) bool { return c.LinkStatus == "retired" })

	// keys role: an operator key made an auditor can no longer send.
	out = mustCLI(t, srv, dir, "keys", "create", "--role", "operator")
	secret := regexp.MustCompile(`secret: (wq_\S+)`).FindStringSubmatch(out)
	id := regexp.MustCompile(`created key (\S+) `).FindStringSubmatch(out)
	if secret == nil || id == nil {
		t.Fatalf("keys create printed %q", out)
	}
	if out := mustCLI(t, srv, dir, "keys", "role", id[1], "auditor"); out != "key "+id[1]+" now has the role auditor\n" {
		t.Fatalf("keys role printed %q", out)
	}
	mustCLI(t, srv, dir, "connections", "register", "--phone", "+491701234568", "--id", "shop-2")
	if _, _, err := cli(t, srv, dir, "", "send", "shop-2", "--to", "+491709876543", "--text", "hi", "--key", secret[1]); !errors.As(err, &p) || p.Status != 403 {
		t.Fatalf("send with the key made auditor: %v, want 403", err)
	}
	if _, _, err := cli(t, srv, dir, "", "keys", "role", id[1], "king"); !errors.As(err, &p) || p.Code != "invalid_request" {
		t.Fatalf("keys role with an unknown role: %v, want invalid_request", err)
	}
}

// cardOf reads connection conn's card with the admin key of dir.
func cardOf(t *testing.T, srv *apitest.Server, dir, conn string) (client.Card, error) {
	t.Helper()
	key, err := os.ReadFile(filepath.Join(dir, "admin.key"))
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.New(srv.URL, strings.TrimSpace(string(key)), nil)
	if err != nil {
		t.Fatal(err)
	}
	return cl.Connection(t.Context(), conn)
}

// waitCard reads conn's card until done accepts it; the limit is only a safety net.
func waitCard(t *testing.T, srv *apitest.Server, dir, conn string, done func(client.Card) bool) {
	t.Helper()
	deadline := time.Now().Add(testwait.Limit)
	for {
		c, err := cardOf(t, srv, dir, conn)
		if err == nil && done(c) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("card of %s: last %+v, %v", conn, c, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

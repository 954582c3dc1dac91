package client_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/waqueue/waqueue/adapters/httpapi/apitest"
	"github.com/waqueue/waqueue/client"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/internal/testwait"
)

// TestCallsAgainstServer runs the calls the examples do not against a real server and checks
// what they decode, so a response shape the client misreads fails here.
func TestCallsAgainstServer(t *testing.T) {
	srv := apitest.Start(t, apitest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Limit) // safety net only
	defer cancel()
	c, err := client.New(srv.URL, srv.AdminKey, nil)
	if err != nil {
		t.Fatal(err)
	}

	if h, err := c.Health(ctx); err != nil || h.Status != "ok" || h.Build.GoVersion != runtime.Version() {
		t.Errorf("Health: %+v %v", h, err)
	}
	if r, err := c.Ready(ctx); err != nil || r.Status != "ready" || r.Components["event_store"] != "ok" {
		t.Errorf("Ready: %+v %v", r, err)
	}
	if doc, err := c.OpenAPI(ctx); err != nil || !bytes.HasPrefix(doc, []byte("openapi:")) {
		t.Errorf("OpenAPI: %.40q %v", doc, err)
	}

	if _, _, err := c.RegisterConnection(ctx, "shop-1", "+4917033330001", ""); err != nil {
		t.Fatal(err)
	}
	if card, err := c.Connection(ctx, "shop-1"); err != nil || card.ID != "shop-1" || card.Phone != "+4917033330001" {
		t.Errorf("Connection: %+v %v", card, err)
	}
	if p, err := c.PairPhone(ctx, "shop-1", ""); err != nil || p.Code == "" || p.ConnectionID != "shop-1" {
		t.Errorf("PairPhone: %+v %v", p, err)
	}
	if _, _, err := c.RegisterConnection(ctx, "shop-2", "+4917033330002", ""); err != nil {
		t.Fatal(err)
	}
	srv.Simulator.HoldQR(connection.Key(srv.Tenant, "shop-2")) // the pairing runs until scanned: GET sees it
	if q, err := c.StartPairingQR(ctx, "shop-2"); err != nil || q.Code == "" {
		t.Errorf("StartPairingQR: %+v %v", q, err)
	}
	if q, err := c.PairingQR(ctx, "shop-2"); err != nil || q.ConnectionID != "shop-2" {
		t.Errorf("PairingQR: %+v %v", q, err)
	}
	if png, err := c.PairingQRPNG(ctx, "shop-2"); err != nil || !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Errorf("PairingQRPNG: %d bytes, %v", len(png), err)
	}

	// A webhook receiver that verifies every request.
	got := make(chan string, 16)
	var secret atomic.Pointer[string]
	secret.Store(new(string))
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := client.VerifyWebhookRequest(r, *secret.Load(), 1<<20)
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		got <- r.Header.Get(client.HeaderEventType) + " " + string(body)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer recv.Close()
	hook, err := c.RegisterWebhook(ctx, recv.URL, "waqueue.message.status_changed.v1")
	if err != nil || !strings.HasPrefix(hook.Secret, "whsec_") {
		t.Fatalf("RegisterWebhook: %+v %v", hook, err)
	}
	secret.Store(&hook.Secret)
	if hs, err := c.Webhooks(ctx); err != nil || len(hs) != 1 || hs[0].ID != hook.ID {
		t.Errorf("Webhooks: %+v %v", hs, err)
	}

	acc, _, err := c.Send(ctx, "shop-1", "+4917044440001", "hello", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if m, err := c.Message(ctx, acc.MessageID); err != nil || m.ID != acc.MessageID || m.Status != "queued" || len(m.History) == 0 {
		t.Errorf("Message: %+v %v", m, err)
	}
	if card, err := c.SetOnBan(ctx, "shop-1", "resume"); err != nil || card.OnBan != "resume" {
		t.Errorf("SetOnBan: %+v %v", card, err)
	}
	capN, tz := 250, "Europe/Berlin"
	card, err := c.SetSendingPolicy(ctx, "shop-1", client.SendingPolicyChange{DailyCap: &capN, TimeZone: &tz,
		QuietHours: &client.QuietHours{Start: "22:00", End: "07:00"}})
	if p := card.SendingPolicy; err != nil || p.DailyCap != 250 || p.TimeZone != tz || p.MinIntervalSeconds != 3 ||
		p.QuietHours == nil || p.QuietHours.Start != "22:00" || card.DispatchedToday != 0 {
		t.Errorf("SetSendingPolicy: %+v %v", card, err)
	}
	if card, err := c.SetSendingPolicy(ctx, "shop-1", client.SendingPolicyChange{NoQuietHours: true}); err != nil || card.SendingPolicy.QuietHours != nil {
		t.Errorf("SetSendingPolicy without quiet hours: %+v %v", card, err)
	}
	zero := 0
	var pe *client.Problem
	if _, err := c.SetSendingPolicy(ctx, "shop-1", client.SendingPolicyChange{DailyCap: &zero}); !errors.As(err, &pe) || pe.Code != "invalid_sending_policy" {
		t.Errorf("SetSendingPolicy with cap 0: %v", err)
	}
	second, _, err := c.Send(ctx, "shop-1", "+4917044440002", "cancel me", "")
	if err != nil {
		t.Fatal(err)
	}
	if m, err := c.CancelMessage(ctx, "shop-1", second.MessageID, "sent by mistake"); err != nil || m.MessageID != second.MessageID || m.Status != "cancelled" || m.Reason != "sent by mistake" {
		t.Errorf("CancelMessage: %+v %v", m, err)
	}
	if _, err := c.CancelMessage(ctx, "shop-1", second.MessageID, ""); !client.IsCode(err, "missing_reason") {
		t.Errorf("CancelMessage without a reason: %v, want missing_reason", err)
	}

	for seen := false; !seen; { // every delivery verified by the receiver; wait for the first message's
		select {
		case ev := <-got:
			if !strings.HasPrefix(ev, "waqueue.message.status_changed.v1 ") {
				t.Errorf("webhook received %s", ev)
			}
			seen = strings.Contains(ev, acc.MessageID)
		case <-ctx.Done():
			t.Fatal("no signed webhook delivery of the first message within the safety timeout")
		}
	}
	for delivered := false; !delivered; {
		for d, err := range c.WebhookDeliveries(ctx, hook.ID) {
			if err != nil {
				t.Fatalf("WebhookDeliveries: %v", err)
			}
			delivered = delivered || (d.DeliveredAt != nil && d.EventType == "waqueue.message.status_changed.v1" && len(d.Attempts) > 0)
		}
		if ctx.Err() != nil {
			t.Fatal("the delivery log never showed the delivery")
		}
	}
	if _, err := c.SimulatorBan(ctx, "shop-1", "temporary", 10*time.Minute); err != nil {
		t.Errorf("SimulatorBan: %v", err)
	}
	if _, err := c.SimulatorLift(ctx, "shop-1"); err != nil {
		t.Errorf("SimulatorLift: %v", err)
	}
	if _, err := c.SimulatorLogout(ctx, "shop-1"); err != nil {
		t.Errorf("SimulatorLogout: %v", err)
	}
	if err := c.DeleteWebhook(ctx, hook.ID); err != nil {
		t.Errorf("DeleteWebhook: %v", err)
	}
	if err := c.DeleteWebhook(ctx, hook.ID); !client.IsCode(err, "not_found") {
		t.Errorf("DeleteWebhook twice: %v, want not_found", err)
	}

	if err := srv.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	var revs []uint64
	for e, err := range c.History(ctx, "shop-1", 1) { // a page per event
		if err != nil {
			t.Fatalf("History: %v", err)
		}
		revs = append(revs, e.Revision)
	}
	if len(revs) < 2 {
		t.Errorf("History: revisions %v, want at least the registration and the message", revs)
	}
	for i := 1; i < len(revs); i++ {
		if revs[i] <= revs[i-1] {
			t.Errorf("History revisions not ascending: %v", revs)
		}
	}
	if _, err := c.AnalyticsDaily(ctx, "shop-1", "", ""); err != nil {
		t.Errorf("AnalyticsDaily: %v", err)
	}

	k, _, err := c.CreateKey(ctx, "operator", "ops")
	if err != nil {
		t.Fatal(err)
	}
	if changed, err := c.ChangeKeyRole(ctx, k.ID, "auditor"); err != nil || changed.Role != "auditor" || changed.ID != k.ID {
		t.Errorf("ChangeKeyRole: %+v %v", changed, err)
	}
	if tok, err := c.MintBrokerToken(ctx, 10*time.Minute); err != nil || tok.Token == "" || !tok.ExpiresAt.After(time.Now()) || tok.CommandsSubjectPrefix == "" {
		t.Errorf("MintBrokerToken: %+v %v", tok, err)
	}
	if h, err := c.AdminHealth(ctx); err != nil || !bytes.Contains(h, []byte(`"checks"`)) {
		t.Errorf("AdminHealth: %s %v", h, err)
	}
	n := 0
	for _, err := range c.Checkpoints(ctx, 10) {
		if err != nil {
			t.Fatalf("Checkpoints: %v", err)
		}
		n++
	}
	t.Logf("%d audit checkpoints", n)

	// The auditor key may not register connections: a typed problem.
	auditor, _ := client.New(srv.URL, k.Secret, nil)
	if _, _, err := auditor.RegisterConnection(ctx, "", "+4917033330009", ""); !client.IsCode(err, "forbidden") {
		t.Errorf("auditor registering: %v, want forbidden", err)
	}
}

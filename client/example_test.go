package client_test

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"time"

	"github.com/waqueue/waqueue/adapters/httpapi/apitest"
	"github.com/waqueue/waqueue/adapters/webhooks"
	"github.com/waqueue/waqueue/client"
)

// exampleServer starts a real waqueue server (the API over SQLite with the WhatsApp simulator)
// for the examples, and returns it with its bootstrap admin key and a function that stops it.
func exampleServer(opts apitest.Options) (*apitest.Server, func()) {
	dir, err := os.MkdirTemp("", "waqueue-client-example-")
	if err != nil {
		log.Fatal(err)
	}
	opts.Dir = dir
	srv, err := apitest.New(context.Background(), opts)
	if err != nil {
		log.Fatal(err)
	}
	return srv, func() { srv.Close(); os.RemoveAll(dir) }
}

// Register a connection, queue a message with an idempotency key, retry it safely and read the
// queue.
func Example() {
	srv, stop := exampleServer(apitest.Options{})
	defer stop()
	ctx := context.Background()

	c, err := client.New(srv.URL, srv.AdminKey, nil)
	if err != nil {
		log.Fatal(err)
	}
	card, _, err := c.RegisterConnection(ctx, "shop-1", "+4917011110001", "")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(card.ID, card.LinkStatus, card.QueueStatus)

	key := client.NewIdempotencyKey()
	first, _, err := c.Send(ctx, "shop-1", "+4917022220002", "Your order has shipped", key)
	if err != nil {
		log.Fatal(err)
	}
	again, _, err := c.Send(ctx, "shop-1", "+4917022220002", "Your order has shipped", key)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("retry answered the same message:", again.MessageID == first.MessageID)

	if err := srv.Sync(ctx); err != nil {
		log.Fatal(err)
	}
	q, _, err := c.Queue(ctx, "shop-1")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("pending:", q.Pending)
	// Output:
	// shop-1 unpaired open
	// retry answered the same message: true
	// pending: 1
}

// Problems come back as *client.Problem with a stable code: while a queue is being cleared, a
// new message is refused with queue_clearing.
func ExampleIsCode() {
	srv, stop := exampleServer(apitest.Options{ManualClears: true}) // the clear stays in progress
	defer stop()
	ctx := context.Background()
	c, _ := client.New(srv.URL, srv.AdminKey, nil)
	card, _, err := c.RegisterConnection(ctx, "shop-1", "+4917011110003", "")
	if err != nil {
		log.Fatal(err)
	}
	if _, err := c.Clear(ctx, "shop-1", client.ClearRequest{Reason: "banned", Confirm: card.Phone}, client.NewIdempotencyKey()); err != nil {
		log.Fatal(err)
	}
	_, _, err = c.Send(ctx, "shop-1", "+4917022220004", "hello", "")
	fmt.Println(client.IsCode(err, "queue_clearing"))
	_, err = c.Connection(ctx, "no-such-connection")
	fmt.Println(client.IsCode(err, "not_found"))
	// Output:
	// true
	// true
}

// Iterate over the whole audit trail; the client reads the pages as the loop goes.
func ExampleClient_AuditEntries() {
	srv, stop := exampleServer(apitest.Options{})
	defer stop()
	ctx := context.Background()
	c, _ := client.New(srv.URL, srv.AdminKey, nil)
	if _, _, err := c.RegisterConnection(ctx, "shop-1", "+4917011110005", ""); err != nil {
		log.Fatal(err)
	}
	for _, note := range []string{"first", "second", "third"} {
		if _, _, err := c.Hold(ctx, "shop-1", note); err != nil {
			log.Fatal(err)
		}
		if _, _, err := c.Resume(ctx, "shop-1", note); err != nil {
			log.Fatal(err)
		}
	}
	if err := srv.Sync(ctx); err != nil {
		log.Fatal(err)
	}
	n := 0
	for e, err := range c.AuditEntries(ctx, client.AuditFilter{Connection: "shop-1"}, 2) { // 2 a page
		if err != nil {
			log.Fatal(err)
		}
		if e.EventType == "QueueHeld" || e.EventType == "QueueResumed" {
			n++
		}
	}
	fmt.Println("holds and resumes:", n)
	// Output:
	// holds and resumes: 6
}

// A webhook receiver checks each request's signature with the secret shown at registration.
func ExampleVerifyWebhookSignature() {
	secret := "whsec_example"
	body := []byte(`{"type":"waqueue.message.status_changed.v1"}`)
	sent := time.Unix(1_800_000_000, 0)
	header := webhooks.Sign(secret, sent, body) // what the server sends as Waqueue-Signature

	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := client.VerifyWebhookRequest(r, secret, 1<<20); err != nil {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer receiver.Close()

	fmt.Println(client.VerifyWebhookSignature(secret, header, body, sent.Add(time.Minute), 5*time.Minute))
	err := client.VerifyWebhookSignature(secret, header, []byte(`{"type":"forged"}`), sent, 5*time.Minute)
	fmt.Println(err)
	// A live request is signed now; an old one is refused by VerifyWebhookRequest's tolerance.
	for _, at := range []time.Time{time.Now(), time.Now().Add(-time.Hour)} {
		req, _ := http.NewRequest(http.MethodPost, receiver.URL, strings.NewReader(string(body)))
		req.Header.Set(client.HeaderSignature, webhooks.Sign(secret, at, body))
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			log.Fatal(err)
		}
		res.Body.Close()
		fmt.Println(res.StatusCode)
	}
	// Output:
	// <nil>
	// client: bad webhook signature: signature mismatch
	// 204
	// 401
}

package connection_test

import (
	"errors"
	"fmt"
	"time"

	"github.com/waqueue/waqueue/domain/connection"
)

// Example walks one connection through enqueue, ban, clear and the refused dispatch.
func Example() {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	c := connection.New()
	decide := func(events []connection.Event, err error) {
		if err != nil {
			fmt.Println("refused:", errors.Is(err, connection.ErrQueueClearing), errors.Is(err, connection.ErrMessagePurged))
			return
		}
		for _, e := range events {
			fmt.Println(e.EventType())
			if err := c.Apply(e); err != nil {
				panic(err)
			}
		}
	}
	decide(c.Register(connection.RegisterConnection{ConnectionID: "c1", TenantID: "t1", Phone: "+491701234567", Actor: "op"}, now))
	decide(c.Pair(connection.PairSession{Actor: "op"}, now))
	decide(c.Enqueue(connection.EnqueueMessage{IdempotencyKey: "k1", Recipient: "0170 7654321", Text: "hi", Actor: "svc"}, now))
	decide(c.Ban(connection.BanConnection{Kind: connection.BanPermanent, ReasonCode: "406", Actor: "system"}, now))
	decide(c.RequestClear(connection.RequestClear{ClearID: connection.ClearIDFor("t1", "c1", "x"), Reason: "banned", Actor: "op"}, now))
	decide(c.Enqueue(connection.EnqueueMessage{IdempotencyKey: "k2", Recipient: "0170 7654321", Text: "hi", Actor: "svc"}, now))
	clear, _ := c.CurrentClear()
	fmt.Println("purged:", clear.PurgeCount, clear.Purge)
	decide(c.CompleteClear(connection.CompleteClear{ClearID: clear.ClearID, Actor: "clearing"}, now))
	decide(c.LiftBan(connection.LiftBan{Actor: "system"}, now))
	decide(c.Resume(connection.ResumeQueue{Actor: "op"}, now))
	decide(c.Dispatch(connection.DispatchMessage{MessageID: connection.MessageIDFor("t1", "c1", "k1"), Seq: 1}, now))
	fmt.Println(c.LinkStatus(), c.QueueStatus(), c.Pending())
	// Output:
	// ConnectionRegistered
	// SessionPaired
	// MessageQueued
	// ConnectionBanned
	// QueueHeld
	// ClearQueueRequested
	// refused: true false
	// purged: 1 [{1 1}]
	// QueueCleared
	// BanLifted
	// QueueResumed
	// refused: false true
	// active open 0
}

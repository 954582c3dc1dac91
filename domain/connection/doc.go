// Package connection is the connection aggregate of waqueue: one WhatsApp number of a tenant,
// its link status and its outgoing queue with Clear Queue. It is pure: no I/O, no clock reads
// (every decision takes now), no goroutines; the same history and command give the same events.
//
// # Stream and events
//
// Each connection has one stream, StreamName(Key(tenant, id)) = "connection-<tenant>:<id>"
// ("connection-<id>" for DefaultTenant): ids are scoped to their tenant, and the same id may
// exist in two tenants, fully independent. Its events are the
// structs of events.go, each with a stable type name (the Type… constants, never derived by
// reflection); Encode and Decode convert them to and from the store's (type, JSON) pairs, and
// EventID gives each a deterministic store id.
//
// # How a command handler uses it
//
//	c := connection.New()                     // or connection.Restore(cachedSnapshot)
//	for each recorded event e after c.Version(): ev, _ := connection.Decode(e.Type, e.Data); c.Apply(ev)
//	events, err := c.Enqueue(cmd, now)        // decide; c is not mutated
//	for i, ev := range events: id := connection.EventID(stream, uint64(c.Version()+1+int64(i)), ev)
//	store.Append(ctx, stream, eventstore.Exact(c.Version()) /* NoStream when -1 */, …)
//	on ErrWrongExpectedRevision: reload and decide again.
//
// Broadcasts: validating 100,000 numbers takes seconds, so call PrepareBroadcast once before
// the retry loop and StartPreparedBroadcast inside it (a cheap, O(recipients) decision).
//
// A decision returning no events and no error means "nothing to do" (an idempotent no-op).
// eventstore.ErrDuplicateEventID on MessageQueued means the message (same idempotency key) was
// enqueued already: answer with the same message id. On RequestClear it means the clear of that
// id was recorded already.
//
// # The queue, Seq and the dispatch cursor
//
// The aggregate assigns each queued message the next queue position, Seq, and works the queue
// strictly in order: Dispatch and Expire accept only the head (Head). The dispatcher reads the
// head's id, Seq and expiry from the pending-queue projection, decides Dispatch, appends
// MessageDispatched at the expected revision and only then calls WhatsApp (G5). If Dispatch
// refuses with ErrMessageExpired it decides Expire instead. See Connection for why this keeps
// the state O(1) in the number of messages.
//
// # Clear Queue
//
// RequestClear records ClearQueueRequested, with the exact purged set fixed at that moment
// as ranges of Seq (Purge): the messages of the scope still pending. From then on (G2)
// Enqueue and StartBroadcast fail with *ClearingError (errors.Is(err, ErrQueueClearing); HTTP
// 409 queue_clearing) and Dispatch refuses (G1). Since Dispatch appends at the revision its
// decision saw, a dispatch decided before the request fails with a wrong expected revision and
// is refused on retry: no message of the purged set is ever dispatched after the request. The
// clearing process marks the purged messages in its read models and decides CompleteClear,
// recording QueueCleared with the same exact figures (G3); the queue is then open again, or
// held if it was held.
//
// A broadcast is BroadcastStarted plus its BroadcastQueued chunks (each standing for the
// MessageQueued events of up to BroadcastChunk recipients; Expand; older streams hold the
// MessageQueued events themselves) in one atomic append at the expected revision. Racing a clear, it either lands before ClearQueueRequested (the clear's
// Purge covers all its pending messages) or the append fails and the retry is refused because
// the queue is clearing: never part purged and part queued.
//
// # Hold on ban (G7)
//
// Ban and InvalidateSession also decide QueueHeld (reason banned / session_invalid) unless the
// queue is held already; the hold is an explicit, audited event. LiftBan and Pair do not
// resume it unless the connection's policy is OnBanResume and the hold was automatic; then they
// also decide QueueResumed. An operator resumes with Resume or clears with RequestClear.
package connection

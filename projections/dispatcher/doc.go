// Package dispatcher is the process manager that sends queued messages through WhatsApp and
// feeds what the transport observes about a connection back into the event history.
//
// # Loops
//
// A Dispatcher runs at most one loop (a goroutine) per connection, and only while the
// connection has work: idle connections cost a map entry, no goroutine and no polling.
// Wake-ups come from the event log: the Dispatcher subscribes to the store's global log,
// filtered to connection streams and to the event types that can make a queue dispatchable
// (WakeEventTypes: MessageQueued, BroadcastStarted, QueueResumed, BanLifted, SessionPaired,
// QueueCleared, ConnectionRegistered); a resume, a lifted ban or a completed clear appended
// through this process's Repository also wakes its loop at once (Appended, wired to
// commands.Repository.OnAppended). A wake for a connection whose loop is running only marks
// it dirty; a loop exits when DispatchNext finds nothing dispatchable (empty queue, held,
// clearing, link not active) and no wake arrived meanwhile.
//
// # Start-up
//
// With Config.Backlog (QueueBacklog: one query to the pending-queue projection) Run learns every
// connection the projection knows as of its checkpoint and which had pending or in-flight
// messages. It claims the busy ones' leases in batches (exclusive leases), wakes them, records
// the idle ones without a loop, and subscribes to the wake events from the checkpoint rather
// than the log's start: start-up costs one query and a map entry per idle connection, and one
// loop per connection with work, whatever the history's length. With exclusive leases the
// renewals claim the idle connections' leases in one call and connect their sessions (a few at
// a time, in the background) without starting loops. Without a Backlog (or when it fails) the
// replay starts at the log's start and every connection met gets a loop that claims its lease,
// recovers and finds nothing to do.
//
// Each turn of a loop calls commands.DispatchNextHandler, which records MessageDispatched at
// the expected revision BEFORE the transport is called (G1: a concurrent ClearQueueRequested
// makes the append fail and the retry refuses), or MessageExpired for an expired head (sent to
// nobody). Only after the append succeeded is the message handed to the transport, and its
// outcome recorded: MessageSent, MessageFailed (ErrRejected), or MessageOutcomeUnknown
// (ErrOutcomeUnknown, a send timeout, a shutdown mid-send).
//
// # At most once (G5)
//
// A message whose outcome is unknown is recorded unknown and never sent again automatically.
// When a loop starts for a connection for the first time in this process, every message the
// aggregate holds in flight (dispatched, unacknowledged) was dispatched by a previous process
// that died before recording the outcome: it is recorded unknown (cause "restart"), never
// resent. This requires that only one Dispatcher works a connection at a time: see Leases.
//
// # Leases
//
// A connection's loop runs only while this node holds the connection's lease (Config.Leases):
// each turn checks it (claiming it when not held), and a lease granted with a new epoch means
// another owner may have dispatched, so the in-flight recovery runs first — start-up recovery
// therefore touches only connections this node holds. Every hand-over carries the lease's epoch
// (DispatchNext.Epoch, RetrySend.Epoch, recorded on MessageDispatched and MessageSendRetried)
// and the domain refuses one below the highest epoch on the stream (connection.ErrStaleEpoch):
// a node whose lease lapsed unseen is fenced by the stream once the new owner dispatched, and
// drops the lease. With exclusive leases (TTL > 0) a background renewal renews the node's session
// — and with it every lease of the node, which is tied to it — in one call every
// LeaseRenewInterval, stops trusting those not renewed (their loops
// stop before the next hand-over; their sessions are disconnected) and claims, in one call, the
// connections whose claim was refused, waking those granted (a crashed node's connections
// resume after its leases expire). A loop whose held lease is past its local expiry (a late
// renewal) asks for a renewal at once and waits for it rather than claiming its lease alone;
// only a lease that renewal does not extend is claimed, in one Claim call shared with the other
// loops claiming meanwhile. Sessions follow the leases: Connect on gain, Disconnect on
// loss (ManagesSessions). When the adapter implements Membership (live nodes from the
// renewals' heartbeats), a node claims only the connections Rendezvous ranks it first for among
// the live nodes, and the renewal hands over (releases) the idle connections another live node
// ranks first: a node joining or leaving moves only its share. Lease times are real time, never the injected Clock. Run does not
// release the leases; a graceful shutdown calls ReleaseLeases after Run returned. After a
// takeover the daily count and the pacing interval are rebuilt from the stream.
//
// Store failures. An outcome (sent, failed, unknown) that cannot be recorded because the store
// fails is not dropped: it is recorded again, with a growing pause, until the store takes it or
// Run's context ends (then the next process's start records the message unknown). The loop of
// the connection waits meanwhile, so nothing else is dispatched on it. When a dispatch step
// fails with a store error, the MessageDispatched may have been written even though the append
// reported an error; the loop therefore runs the in-flight recovery again before its next
// dispatch and records every message in flight unknown (cause "store_error"), never resent.
// Sends are synchronous within the loop, so at that point this process has no outstanding send
// on the connection: every message in flight is one whose outcome nobody will record.
//
// Every hand-over is fenced (G1). When Send answers ErrRateLimited or ErrNotConnected
// (transport.Retryable: provably nothing was sent), the loop records MessageSendDeferred (the
// hand-over the fence allowed did not happen: a clear from then on fails the message not_sent
// instead of reporting it in flight), waits an exponential backoff (honouring
// SendError.RetryAfter) and then fences the retry with RetrySend: MessageSendRetried appended at
// the expected revision. The message is handed over again only when that append succeeded, with
// SendRequest.Fence set to its revision. The domain refuses the retry when a clear, hold, ban or
// session loss was recorded since the message was dispatched — even one that is over by the time
// of the retry — and the message is then recorded failed "not_sent" (or was failed not_sent by
// the clear itself); it was never handed over. Rate-limit refusals are retried up to
// Config.MaxSendAttempts, not-connected refusals for as long as the domain allows (an outage
// must not drain the queue into failures; an operator ends the wait by holding the queue).
// A message found deferred at start (or after a store failure) is recorded failed not_sent.
//
// # Pacing
//
// The domain works the queue strictly in order (only the head can be dispatched), so 1:1
// messages cannot overtake a broadcast queued before them. The pace is therefore one per
// connection for every message, set by the connection's sending policy
// (connection.SendingPolicy, recorded by SendingPolicyChanged; the defaults otherwise). The loop
// reads it at every turn (Dispatcher.policy, the one place), so a change applies at once on
// whichever node holds the lease; a SendingPolicyChanged also interrupts a pacing wait and wakes
// a waiting loop. Before each dispatch, in order: during the quiet hours (local time in the
// policy's zone) and once DailyCap messages were dispatched on the local day, the loop exits
// leaving a timer at the end of the quiet hours or at the next local midnight (messages wait,
// nothing fails); then it waits MinInterval plus a drawn fraction of Jitter (seeded) since the
// last hand-over. The day's count and the last hand-over are read from the stream's
// MessageDispatched events when a loop first starts in this process, after a store failure and
// after a lease takeover, then kept in memory. Expired messages do not consume pace or cap.
// Pacing{Unpaced: true} (the server's --no-pacing) overrides every connection's policy.
//
// # Transport events
//
// Run registers the Dispatcher as the transport's event handler and turns events into
// commands, acting as commands.SystemPrincipal of the connection's tenant:
//
//	Paired              → PairingSucceeded (JID)
//	SessionInvalidated  → SessionInvalidated (reason "401"/"403": queue held, G7)
//	PermanentBan        → ReportBan permanent (queue held)
//	TemporaryBan        → ReportBan temporary with its code and expiry (queue held)
//	BanLifted           → LiftBan (the queue stays held unless the connection's policy is resume)
//	Receipt             → RecordDelivered / RecordRead for each message id
//	StreamReplaced      → RecordTransportProblem stream_replaced (link and queue unchanged)
//	ClientOutdated      → RecordTransportProblem client_outdated, reason "405"
//	KeepAliveTimeout    → RecordTransportProblem keepalive_timeout, once per streak of failures
//	                      (ErrorCount <= 1; later failures of the streak are only counted)
//	ConnectFailure      → RecordTransportProblem connect_failure, reason the code, detail the message
//	Connected, QRCode, PairingCode, PairingFailed → ignored (pairing is the API's business)
//
// The four problems are also logged and counted (metric); their detail is cut to
// connection.MaxNoteLen bytes of valid UTF-8, and the connection card shows the last one.
//
// Refusals by the domain (a ban reported twice, a receipt for a purged or unknown message, an
// event for a connection this store does not know) are counted and logged at debug level, not
// as errors. A receipt refused for a message WhatsApp never had from us (purged, expired,
// failed, never dispatched) is also logged at info level and counted in
// waqueue_dispatcher_receipts_refused_total{kind}. Receipts need the message's queue position: it is taken from the aggregate's
// in-flight set, from a bounded in-memory index of messages this process dispatched, or from
// Config.Locator (the message-status projection, see StatusLocator); a receipt no source knows
// is ignored.
package dispatcher

// Package commands is the write side of waqueue: one file per command, each an exported command
// struct and a handler that authorizes, loads the connection, decides with the pure domain
// (domain/connection), appends at the expected revision and retries on conflict.
//
// # The repository
//
// Every handler goes through Repository.Update, the one place that loads, decides, appends and
// retries. Loading is fast whatever the length of a stream: a bounded in-memory LRU cache keeps
// aggregate states by connection (and is updated with every event a successful append wrote, so
// it never serves a state older than one this process produced), and persisted snapshots in the
// stream "snapshot-connection-<id>" (see SnapshotStream) let a cold start read one snapshot and
// the events after it instead of the whole stream.
//
// # Principals and tenants
//
// The caller's principal travels in the context (WithPrincipal). Each handler first checks the
// principal's right (errors.Is(err, auth.ErrForbidden)), then loads the connection; a connection
// of another tenant is answered exactly like a missing one, with a *NotFoundError (G9).
// Transport-originated commands (pairing, session loss, bans, dispatch, outcomes, expiry and the
// completion of a clear) need auth.System, which only the in-process system principal
// (SystemPrincipal) holds: no API key of any role, and no bus message, can issue them. The
// command processor does not even subscribe to them (BusCommandNames).
//
// # The command bus
//
// CommandBus and RegisterProcessor put the same handlers behind watermill's CQRS component, on any
// message.Publisher/Subscriber (an in-process GoChannel by default). Command names are explicit
// and stable (CommandName); the caller's credential (a short-lived broker token, never an API
// key) and the tenant travel in the message metadata, and an Authenticator turns the credential
// into a principal, which must belong to that tenant.
package commands

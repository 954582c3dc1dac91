// Package wmtransport implements the transport port (adapters/transport) with go.mau.fi/whatsmeow:
// one whatsmeow client per connection, device sessions in whatsmeow's sqlstore on waqueue's own
// database (SQLite through modernc.org/sqlite, or PostgreSQL through pgx's database/sql driver).
//
// # Storage
//
// New runs sqlstore's migrations (tables whatsmeow_*) and creates one table of its own,
// wmtransport_connection, mapping our connection's tenant-scoped key (connection.Key; rows of
// the default tenant written before scoping hold the bare id, which is that tenant's key) to the
// device JID whatsmeow keys its sessions by. SQLite needs foreign keys on (adapters/sqlitedb.Open does that); sqlstore refuses otherwise.
// Dialects: "sqlite" (driver "sqlite") and "postgres" (driver "pgx").
//
// # Several nodes
//
// Nodes sharing the database share the session store and the mapping; the mapping is read from
// the database whenever a client is made (Connect, PairQR, PairPhone, Unpair), never trusted from
// memory. A pairing's client only pairs: whatsmeow's login after pairing (stream error 515) is
// off and the client is dropped at PairSuccess, before Paired is reported, so that the one client
// of the device is the one Connect makes on the node holding the connection's lease (WhatsApp
// allows one stream per device: a second replaces the first, stream:error conflict replaced).
// Unpair on a node without the client deletes the stored session; the node whose client is
// connected ends it (its dispatcher calls Unpair on seeing the logout recorded). Mappings are
// forgotten only for the device they name, so a node's late view never removes a newer pairing.
//
// # Event mapping
//
// whatsmeow event (types/events)                 → transport event          → intended domain outcome
//
//	PairSuccess{ID}                                → Paired{JID, Phone}       link active; the pairing's
//	                                                                          client is dropped first and
//	                                                                          the lease owner connects
//	PairSuccess, connection mapped to another
//	  device meanwhile (another node's pairing)    → PairingFailed{Reason}    the new device is logged out
//	QR channel "code" items                        → QRCode{Codes}            show the QR code
//	PairPhone's code                               → PairingCode{Code}        show the code
//	QR channel timeout / error / unexpected event  → PairingFailed{Reason}    stays unpaired
//	Connected (normally)                           → Connected                link active
//	Connected, first after a TemporaryBan          → BanLifted                banned → active, queue stays held (G7)
//	LoggedOut{Reason 401} (failure or stream error
//	  401 + conflict device_removed)               → SessionInvalidated{401}  session_invalid, queue held
//	LoggedOut{Reason 403}                          → SessionInvalidated{403}  session_invalid, queue held
//	LoggedOut{Reason 406}                          → PermanentBan{406}        banned (permanent), queue held
//	TemporaryBan{Code, Expire} (failure 402)       → TemporaryBan{Code, Expire, ExpiresAt}
//	                                                                          banned until ExpiresAt, queue held;
//	                                                                          reconnect scheduled at ExpiresAt
//	StreamReplaced (stream:error conflict replaced) → StreamReplaced          connection offline, operator attention
//	ClientOutdated (failure 405)                   → ClientOutdated           connection offline until upgrade
//	KeepAliveTimeout{ErrorCount, LastSuccess}      → KeepAliveTimeout         informational (whatsmeow keeps trying)
//	ConnectFailure{Reason, Message} (other codes,
//	  e.g. 400, 409, 415, 418, 501)                → ConnectFailure{Reason}   connection offline, operator attention
//	Receipt{Type ""}       (delivered)             → Receipt{Kind delivered}  message delivered
//	Receipt{Type "read"}                           → Receipt{Kind read}       message read
//	Receipt of any other type (read-self, sender,
//	  retry, played, server-error, inactive, ...),
//	  from ourselves, or for ids we did not make   → nothing
//
// Receipt.MessageIDs are our UUIDs, recovered with transport.ParseWAMessageID from the WhatsApp ids
// we set with SendRequestExtra.ID. After LoggedOut whatsmeow deletes the device from the sqlstore;
// the adapter forgets the connection's mapping too, so Connect answers ErrNotPaired until it is
// paired again. WhatsApp has no "ban lifted" event: after TemporaryBan the adapter reconnects when
// Expire has passed on its injected clock (retrying every Config.ReconnectBackoff if the attempt
// cannot even start) and reports the first Connected after that as BanLifted.
//
// # Send errors
//
//	before calling whatsmeow: invalid request      → ErrRejected
//	no session / not logged in / socket down       → ErrNotConnected
//	whatsmeow.ErrNotLoggedIn                       → ErrNotConnected
//	server answered with error 429 (message or IQ) → ErrRateLimited
//	server answered with another error code,
//	  an IQ error before the message was sent      → ErrRejected
//	timeout, context end, disconnect while waiting,
//	  socket errors, anything else                 → ErrOutcomeUnknown (never resend)
//
// whatsmeow cannot always tell whether the message frame left before a socket error, so everything
// not proven unsent is ErrOutcomeUnknown. Sends are serialized per connection (whatsmeow also
// serializes SendMessage per client).
package wmtransport

package wmtransport

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/store/sqlstore"
	"go.mau.fi/whatsmeow/types"
	waLog "go.mau.fi/whatsmeow/util/log"
	"google.golang.org/protobuf/proto"

	"github.com/waqueue/waqueue/adapters/transport"
)

// Name is the adapter name in results and logs.
const Name = "whatsmeow"

// Dialects accepted in Config.Dialect.
const (
	DialectSQLite   = "sqlite"
	DialectPostgres = "postgres"
)

// Config configures a Manager.
type Config struct {
	// DB is the database holding the device sessions; the caller opens and closes it. SQLite
	// needs foreign keys on.
	DB *sql.DB
	// Dialect is DialectSQLite or DialectPostgres.
	Dialect string
	// Clock schedules the reconnect after a temporary ban; nil means transport.SystemClock.
	Clock transport.Clock
	// Log receives whatsmeow's logs (its clients' and its session store's); nil discards
	// them. The server passes SlogLogger of its own logger.
	Log waLog.Logger
	// SendTimeout bounds the wait for the server's acknowledgement of one message; 0 means 75s.
	SendTimeout time.Duration
	// ReconnectBackoff is the wait before retrying a ban-expiry reconnect that failed to start;
	// 0 means one minute.
	ReconnectBackoff time.Duration
	// PairDisplayName is shown on the phone for phone-number pairing, formatted "Browser (OS)";
	// empty means "Chrome (Linux)".
	PairDisplayName string
}

func (c *Config) setDefaults() {
	if c.Clock == nil {
		c.Clock = transport.SystemClock{}
	}
	if c.Log == nil {
		c.Log = waLog.Noop
	}
	if c.SendTimeout == 0 {
		c.SendTimeout = 75 * time.Second
	}
	if c.ReconnectBackoff == 0 {
		c.ReconnectBackoff = time.Minute
	}
	if c.PairDisplayName == "" {
		c.PairDisplayName = "Chrome (Linux)"
	}
}

// Validate reports every problem with the configuration, joined.
func (c Config) Validate() error {
	var errs []error
	if c.DB == nil {
		errs = append(errs, errors.New("wmtransport: config without DB"))
	}
	if c.Dialect != DialectSQLite && c.Dialect != DialectPostgres {
		errs = append(errs, fmt.Errorf("wmtransport: dialect %q is not %q or %q", c.Dialect, DialectSQLite, DialectPostgres))
	}
	if c.SendTimeout < 0 || c.ReconnectBackoff < 0 {
		errs = append(errs, errors.New("wmtransport: negative timeout"))
	}
	return errors.Join(errs...)
}

// Manager is the whatsmeow transport: one whatsmeow client per connection. It is safe for
// concurrent use; Close disconnects every client.
type Manager struct {
	cfg       Config
	container *sqlstore.Container
	events    *transport.EventQueue

	// connect starts a client's connection; tests replace it so nothing dials WhatsApp.
	connect func(*whatsmeow.Client) error

	mu     sync.Mutex
	conns  map[string]*conn  // connections with a client
	paired map[string]string // connection id → device JID, mirror of wmtransport_connection
}

var _ transport.Transport = (*Manager)(nil)

// conn is one connection with its client.
type conn struct {
	id     string
	sendMu sync.Mutex // serializes Send

	mu           sync.Mutex
	client       *whatsmeow.Client
	handlerID    uint32
	pairing      bool
	jid          string          // the device's JID; "" while pairing
	banExpiresAt time.Time       // set while temporarily banned
	awaitingLift bool            // the next Connected is BanLifted
	banTimer     transport.Timer // reconnect at the ban's expiry
	closed       bool
}

// New runs the session store's migrations, loads the connection mapping and returns a Manager.
// It connects nothing: call Connect per connection.
func New(ctx context.Context, cfg Config) (*Manager, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	container := sqlstore.NewWithDB(cfg.DB, cfg.Dialect, cfg.Log.Sub("sqlstore"))
	if err := container.Upgrade(ctx); err != nil {
		return nil, fmt.Errorf("wmtransport: upgrade session store: %w", err)
	}
	m := &Manager{
		cfg:       cfg,
		container: container,
		events:    transport.NewEventQueue(),
		conns:     make(map[string]*conn),
	}
	m.connect = func(c *whatsmeow.Client) error { return c.Connect() }
	if _, err := cfg.DB.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS wmtransport_connection (
		connection_id TEXT PRIMARY KEY,
		jid           TEXT NOT NULL UNIQUE
	)`); err != nil {
		m.events.Close()
		return nil, fmt.Errorf("wmtransport: create connection table: %w", err)
	}
	paired, err := m.loadPaired(ctx)
	if err != nil {
		m.events.Close()
		return nil, err
	}
	m.paired = paired
	return m, nil
}

// Name returns "whatsmeow".
func (m *Manager) Name() string { return Name }

// Logger returns the logger the manager gives whatsmeow's clients (Sub(connection id)) and its
// session store (Sub("sqlstore")): Config.Log, or waLog.Noop when none was set.
func (m *Manager) Logger() waLog.Logger { return m.cfg.Log }

// Close disconnects every client and stops event delivery. The database stays open.
func (m *Manager) Close() {
	m.mu.Lock()
	conns := m.conns
	m.conns = make(map[string]*conn)
	m.mu.Unlock()
	for _, c := range conns {
		c.shutdown()
	}
	m.events.Close()
}

func (m *Manager) q(query string) string {
	if m.cfg.Dialect != DialectPostgres {
		return query
	}
	var b strings.Builder
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			fmt.Fprintf(&b, "$%d", n)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

func (m *Manager) loadPaired(ctx context.Context) (map[string]string, error) {
	rows, err := m.cfg.DB.QueryContext(ctx, `SELECT connection_id, jid FROM wmtransport_connection`)
	if err != nil {
		return nil, fmt.Errorf("wmtransport: load connections: %w", err)
	}
	defer rows.Close()
	out := make(map[string]string)
	for rows.Next() {
		var id, jid string
		if err := rows.Scan(&id, &jid); err != nil {
			return nil, fmt.Errorf("wmtransport: load connections: %w", err)
		}
		out[id] = jid
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("wmtransport: load connections: %w", err)
	}
	return out, nil
}

// savePaired records connID → jid, replacing an earlier pairing of either.
func (m *Manager) savePaired(ctx context.Context, connID string, jid types.JID) error {
	tx, err := m.cfg.DB.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("wmtransport: save pairing of %s: %w", connID, err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, m.q(`DELETE FROM wmtransport_connection WHERE connection_id = ? OR jid = ?`), connID, jid.String()); err != nil {
		return fmt.Errorf("wmtransport: save pairing of %s: %w", connID, err)
	}
	if _, err := tx.ExecContext(ctx, m.q(`INSERT INTO wmtransport_connection (connection_id, jid) VALUES (?, ?)`), connID, jid.String()); err != nil {
		return fmt.Errorf("wmtransport: save pairing of %s: %w", connID, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("wmtransport: save pairing of %s: %w", connID, err)
	}
	m.mu.Lock()
	for id, j := range m.paired {
		if j == jid.String() {
			delete(m.paired, id)
		}
	}
	m.paired[connID] = jid.String()
	m.mu.Unlock()
	return nil
}

// savePairing records connID → jid for a pairing that just succeeded, unless connID is mapped
// to another device already: the connection was paired meanwhile through another pairing
// (another node's, several nodes sharing the store). That device's JID is then returned and
// nothing is changed. Two pairings succeeding at once are ordered by the primary key.
func (m *Manager) savePairing(ctx context.Context, connID string, jid types.JID) (other string, err error) {
	tx, err := m.cfg.DB.BeginTx(ctx, nil)
	if err != nil {
		return "", fmt.Errorf("wmtransport: save pairing of %s: %w", connID, err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, m.q(`DELETE FROM wmtransport_connection WHERE jid = ? AND connection_id <> ?`), jid.String(), connID); err != nil {
		return "", fmt.Errorf("wmtransport: save pairing of %s: %w", connID, err)
	}
	res, err := tx.ExecContext(ctx, m.q(`INSERT INTO wmtransport_connection (connection_id, jid) VALUES (?, ?) ON CONFLICT (connection_id) DO NOTHING`), connID, jid.String())
	if err != nil {
		return "", fmt.Errorf("wmtransport: save pairing of %s: %w", connID, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return "", fmt.Errorf("wmtransport: save pairing of %s: %w", connID, err)
	} else if n == 0 {
		if err := tx.QueryRowContext(ctx, m.q(`SELECT jid FROM wmtransport_connection WHERE connection_id = ?`), connID).Scan(&other); err != nil {
			return "", fmt.Errorf("wmtransport: save pairing of %s: %w", connID, err)
		}
		if other != jid.String() {
			return other, nil
		}
	}
	if err := tx.Commit(); err != nil {
		return "", fmt.Errorf("wmtransport: save pairing of %s: %w", connID, err)
	}
	m.mu.Lock()
	for id, j := range m.paired {
		if j == jid.String() {
			delete(m.paired, id)
		}
	}
	m.paired[connID] = jid.String()
	m.mu.Unlock()
	return "", nil
}

// forgetPaired deletes connID's mapping to jid (that device's session is gone). A mapping to
// another device (the connection was paired again, maybe on another node) is kept.
func (m *Manager) forgetPaired(ctx context.Context, connID, jid string) error {
	m.mu.Lock()
	if m.paired[connID] == jid {
		delete(m.paired, connID)
	}
	m.mu.Unlock()
	if _, err := m.cfg.DB.ExecContext(ctx, m.q(`DELETE FROM wmtransport_connection WHERE connection_id = ? AND jid = ?`), connID, jid); err != nil {
		return fmt.Errorf("wmtransport: forget %s: %w", connID, err)
	}
	return nil
}

// pairedJID reads connID's device JID from the database ("" when it has none) and refreshes the
// in-memory mirror Status reads. The database is the truth: on several nodes sharing it, another
// node may have paired or unpaired the connection since this one last looked.
func (m *Manager) pairedJID(ctx context.Context, connID string) (string, error) {
	var jid string
	err := m.cfg.DB.QueryRowContext(ctx, m.q(`SELECT jid FROM wmtransport_connection WHERE connection_id = ?`), connID).Scan(&jid)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("wmtransport: %s: read pairing: %w", connID, err)
	}
	m.mu.Lock()
	if jid == "" {
		delete(m.paired, connID)
	} else {
		m.paired[connID] = jid
	}
	m.mu.Unlock()
	return jid, nil
}

func (m *Manager) lookup(connID string) *conn {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.conns[connID]
}

// attach loads connID's stored device and creates its client (not connected). An attached
// connection is returned as is.
func (m *Manager) attach(ctx context.Context, connID string) (*conn, error) {
	if c := m.lookup(connID); c != nil {
		return c, nil
	}
	jidText, err := m.pairedJID(ctx, connID)
	if err != nil {
		return nil, err
	}
	if jidText == "" {
		return nil, fmt.Errorf("wmtransport: %s: %w", connID, transport.ErrNotPaired)
	}
	jid, err := types.ParseJID(jidText)
	if err != nil {
		return nil, fmt.Errorf("wmtransport: %s: stored jid %q: %w", connID, jidText, err)
	}
	device, err := m.container.GetDevice(ctx, jid)
	if err != nil {
		return nil, fmt.Errorf("wmtransport: %s: load device %s: %w", connID, jid, err)
	}
	if device == nil {
		// whatsmeow deleted the session (logged out while we were not listening).
		if err := m.forgetPaired(ctx, connID, jidText); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("wmtransport: %s: session of %s is gone: %w", connID, jid, transport.ErrNotPaired)
	}
	c, err := m.register(connID, whatsmeow.NewClient(device, m.cfg.Log.Sub(connID)), false)
	if err == nil {
		c.mu.Lock()
		if c.jid == "" && !c.pairing {
			c.jid = jidText
		}
		c.mu.Unlock()
	}
	return c, err
}

// register adds a client for connID unless another goroutine did first.
func (m *Manager) register(connID string, client *whatsmeow.Client, pairing bool) (*conn, error) {
	c := &conn{id: connID, client: client, pairing: pairing}
	m.mu.Lock()
	defer m.mu.Unlock()
	if other := m.conns[connID]; other != nil {
		if pairing {
			return nil, fmt.Errorf("wmtransport: pair %s: %w", connID, transport.ErrPairingInProgress)
		}
		return other, nil
	}
	c.handlerID = client.AddEventHandler(m.eventHandler(c))
	m.conns[connID] = c
	return c, nil
}

// drop removes c (if still registered) and disconnects its client.
func (m *Manager) drop(c *conn) {
	m.mu.Lock()
	if m.conns[c.id] == c {
		delete(m.conns, c.id)
	}
	m.mu.Unlock()
	c.shutdown()
}

func (c *conn) shutdown() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	if c.banTimer != nil {
		c.banTimer.Stop()
		c.banTimer = nil
	}
	client, id := c.client, c.handlerID
	c.mu.Unlock()
	// Outside c.mu: whatsmeow may be calling our handler, which takes c.mu.
	go client.RemoveEventHandler(id)
	client.Disconnect()
}

// Connect loads the connection's session and connects its client; see transport.Transport.
func (m *Manager) Connect(ctx context.Context, connID string) error {
	c, err := m.attach(ctx, connID)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pairing {
		return fmt.Errorf("wmtransport: connect %s: %w", connID, transport.ErrPairingInProgress)
	}
	if c.closed {
		// Disconnect or Unpair dropped the client since attach found it: connecting it now
		// would leave a client no one can end.
		return fmt.Errorf("wmtransport: connect %s: disconnected meanwhile: %w", connID, transport.ErrNotConnected)
	}
	if c.client.IsConnected() || !c.banExpiresAt.IsZero() {
		return nil // up, or a reconnect is scheduled at the ban's expiry
	}
	if err := m.connect(c.client); err != nil && !errors.Is(err, whatsmeow.ErrAlreadyConnected) {
		return fmt.Errorf("wmtransport: connect %s: %w", connID, err)
	}
	return nil
}

// Disconnect closes the connection's client; the session stays stored.
func (m *Manager) Disconnect(ctx context.Context, connID string) error {
	if c := m.lookup(connID); c != nil {
		m.drop(c)
	}
	return nil
}

// Status reports the connection's state from its client and the stored mapping.
func (m *Manager) Status(connID string) transport.Status {
	st := transport.Status{ConnectionID: connID, State: transport.StateUnpaired}
	m.mu.Lock()
	c, jid := m.conns[connID], m.paired[connID]
	m.mu.Unlock()
	if jid != "" {
		st.JID, st.State = jid, transport.StateDisconnected
		if parsed, err := types.ParseJID(jid); err == nil {
			st.Phone = "+" + parsed.User
		}
	}
	if c == nil {
		return st
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.pairing:
		st.State = transport.StatePairing
	case !c.banExpiresAt.IsZero():
		st.State, st.BanExpiresAt = transport.StateTemporarilyBanned, c.banExpiresAt
	case c.client.IsLoggedIn():
		st.State = transport.StateConnected
	case c.client.IsConnected():
		st.State = transport.StateConnecting
	}
	return st
}

// Send sends req as a text message; see the package doc for the error mapping.
func (m *Manager) Send(ctx context.Context, req transport.SendRequest) (transport.SendResult, error) {
	fail := func(kind error, reason string, cause error) (transport.SendResult, error) {
		return transport.SendResult{}, &transport.SendError{Kind: kind, ConnectionID: req.ConnectionID,
			MessageID: req.MessageID, Reason: "whatsmeow: " + reason, Err: cause}
	}
	if err := req.Validate(); err != nil {
		return fail(transport.ErrRejected, "invalid request", err)
	}
	digits, _ := transport.PhoneDigits(req.To)
	c := m.lookup(req.ConnectionID)
	if c == nil {
		return fail(transport.ErrNotConnected, "connection has no client (not paired or not connected)", nil)
	}
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	c.mu.Lock()
	client, banned, closed, pairing := c.client, !c.banExpiresAt.IsZero(), c.closed, c.pairing
	c.mu.Unlock()
	switch {
	case pairing:
		return fail(transport.ErrNotConnected, "connection is pairing", nil)
	case closed:
		return fail(transport.ErrNotConnected, "connection was disconnected", nil)
	case banned:
		return fail(transport.ErrNotConnected, "connection is temporarily banned", nil)
	case client.Store.ID == nil:
		return fail(transport.ErrNotConnected, "client has no logged-in session", whatsmeow.ErrNotLoggedIn)
	case !client.IsConnected():
		return fail(transport.ErrNotConnected, "client is not connected", whatsmeow.ErrNotConnected)
	case !client.IsLoggedIn():
		return fail(transport.ErrNotConnected, "client is connected but not logged in", nil)
	}
	if err := ctx.Err(); err != nil {
		return fail(transport.ErrNotConnected, "context ended before the message was handed over", err)
	}
	waID := transport.WAMessageID(req.MessageID)
	resp, err := client.SendMessage(ctx, types.NewJID(digits, types.DefaultUserServer),
		&waE2E.Message{Conversation: proto.String(req.Text)},
		whatsmeow.SendRequestExtra{ID: waID, Timeout: m.cfg.SendTimeout})
	if err != nil {
		kind, reason := classifySendError(err)
		return fail(kind, reason, err)
	}
	return transport.SendResult{WAMessageID: waID, ServerTimestamp: resp.Timestamp, Adapter: Name}, nil
}

// classifySendError maps an error of whatsmeow's SendMessage to a transport outcome; see the
// package doc. Only errors that prove nothing was sent are retryable.
//
//lint:ignore ST1008 kind is the sentinel naming the outcome, not a failure of this function
func classifySendError(err error) (kind error, reason string) {
	var iqErr *whatsmeow.IQError
	switch {
	case errors.Is(err, whatsmeow.ErrNotLoggedIn):
		return transport.ErrNotConnected, "client has no logged-in session"
	case errors.Is(err, whatsmeow.ErrServerReturnedError):
		if strings.HasSuffix(err.Error(), " 429") {
			return transport.ErrRateLimited, "server answered 429"
		}
		return transport.ErrRejected, "server answered with an error"
	case errors.As(err, &iqErr):
		// An info query (device list, user info) failed before the message node was written.
		if iqErr.Code == 429 {
			return transport.ErrRateLimited, "server rate-limited a query before sending"
		}
		return transport.ErrRejected, fmt.Sprintf("server refused a query before sending (%d)", iqErr.Code)
	case errors.Is(err, whatsmeow.ErrMessageTimedOut):
		return transport.ErrOutcomeUnknown, "no acknowledgement before the timeout"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return transport.ErrOutcomeUnknown, "context ended while sending"
	default:
		return transport.ErrOutcomeUnknown, "cannot prove the message was not sent"
	}
}

// SetHandler registers the event handler; see transport.Transport.
func (m *Manager) SetHandler(h transport.Handler) { m.events.SetHandler(h) }

// Unpair logs the connection out; see transport.Transport. A connected client logs the linked
// device out at WhatsApp (whatsmeow's Logout: the remove-companion-device query, then the
// device is deleted from the session store); without a connected client here the stored device
// is deleted only (Remote false: the phone lists the linked device until WhatsApp drops it, or
// until the node whose client is connected logs it out: the dispatcher there does, when it
// sees the logout recorded). Either way the mapping is forgotten and the client dropped, so
// PairQR and PairPhone start afresh. A pairing in progress is refused (ErrPairingInProgress).
func (m *Manager) Unpair(ctx context.Context, connID string) (transport.Unpaired, error) {
	c := m.lookup(connID)
	if c != nil {
		c.mu.Lock()
		client, pairing := c.client, c.pairing
		c.mu.Unlock()
		if pairing {
			return transport.Unpaired{}, fmt.Errorf("wmtransport: unpair %s: %w", connID, transport.ErrPairingInProgress)
		}
		if id := client.Store.ID; client.IsConnected() && id != nil {
			jid := id.String()
			if err := client.Logout(ctx); err != nil {
				return transport.Unpaired{}, fmt.Errorf("wmtransport: unpair %s: %w", connID, err)
			}
			m.drop(c)
			return transport.Unpaired{Remote: true}, m.forgetPaired(ctx, connID, jid)
		}
		m.drop(c)
	}
	jidText, err := m.pairedJID(ctx, connID)
	if err != nil {
		return transport.Unpaired{}, fmt.Errorf("wmtransport: unpair: %w", err)
	}
	if jidText == "" {
		return transport.Unpaired{}, nil
	}
	if jid, err := types.ParseJID(jidText); err == nil {
		device, err := m.container.GetDevice(ctx, jid)
		if err != nil {
			return transport.Unpaired{}, fmt.Errorf("wmtransport: unpair %s: load device %s: %w", connID, jid, err)
		}
		if device != nil {
			if err := device.Delete(ctx); err != nil {
				return transport.Unpaired{}, fmt.Errorf("wmtransport: unpair %s: delete device %s: %w", connID, jid, err)
			}
		}
	}
	return transport.Unpaired{}, m.forgetPaired(ctx, connID, jidText)
}

// CheckNumbers asks WhatsApp through the connection's logged-in client (whatsmeow's
// IsOnWhatsApp, one usync query); see transport.Transport.
func (m *Manager) CheckNumbers(ctx context.Context, connID string, phones []string) ([]transport.NumberCheck, error) {
	if len(phones) > transport.MaxCheckNumbers {
		return nil, fmt.Errorf("wmtransport: check %d numbers, at most %d: %w", len(phones), transport.MaxCheckNumbers, transport.ErrRejected)
	}
	var distinct []string
	seen := make(map[string]bool, len(phones))
	for _, p := range phones {
		if _, err := transport.PhoneDigits(p); err != nil {
			return nil, fmt.Errorf("wmtransport: check numbers: %w: %w", transport.ErrRejected, err)
		}
		if !seen[p] {
			seen[p] = true
			distinct = append(distinct, p)
		}
	}
	c := m.lookup(connID)
	if c == nil {
		return nil, fmt.Errorf("wmtransport: check numbers on %s: no client: %w", connID, transport.ErrNotConnected)
	}
	c.mu.Lock()
	client, pairing, closed := c.client, c.pairing, c.closed
	c.mu.Unlock()
	if pairing || closed || client.Store.ID == nil || !client.IsConnected() {
		return nil, fmt.Errorf("wmtransport: check numbers on %s: %w", connID, transport.ErrNotConnected)
	}
	if len(distinct) == 0 {
		return []transport.NumberCheck{}, nil
	}
	resp, err := client.IsOnWhatsApp(ctx, distinct)
	if err != nil {
		var iqErr *whatsmeow.IQError
		switch {
		case errors.As(err, &iqErr) && iqErr.Code == 429:
			return nil, fmt.Errorf("wmtransport: check numbers on %s: %w: %w", connID, transport.ErrRateLimited, err)
		case errors.Is(err, whatsmeow.ErrNotConnected), errors.Is(err, whatsmeow.ErrNotLoggedIn):
			return nil, fmt.Errorf("wmtransport: check numbers on %s: %w: %w", connID, transport.ErrNotConnected, err)
		}
		return nil, fmt.Errorf("wmtransport: check numbers on %s: %w: %w", connID, transport.ErrRejected, err)
	}
	byQuery := make(map[string]types.IsOnWhatsAppResponse, len(resp))
	for _, r := range resp {
		byQuery[r.Query] = r
	}
	out := make([]transport.NumberCheck, 0, len(distinct))
	for _, p := range distinct {
		nc := transport.NumberCheck{Phone: p}
		if r, ok := byQuery[p]; ok && r.IsIn {
			nc.OnWhatsApp, nc.JID = true, r.JID.String()
		}
		out = append(out, nc)
	}
	return out, nil
}

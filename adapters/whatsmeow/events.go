package wmtransport

import (
	"context"
	"time"

	"github.com/google/uuid"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"

	"github.com/waqueue/waqueue/adapters/transport"
)

func (m *Manager) header(connID string) transport.EventHeader {
	return transport.EventHeader{ConnectionID: connID, At: m.cfg.Clock.Now()}
}

// eventHandler maps c's whatsmeow events to transport events; see the table in the package doc.
// whatsmeow calls it from several goroutines; Emit only queues.
func (m *Manager) eventHandler(c *conn) func(any) {
	return func(raw any) {
		if e, ok := m.mapEvent(c, raw); ok {
			m.events.Emit(e)
		}
	}
}

func (m *Manager) mapEvent(c *conn, raw any) (transport.Event, bool) {
	h := m.header(c.id)
	switch e := raw.(type) {
	case *events.PairSuccess:
		return m.pairSucceeded(c, e.ID), true
	case *events.Connected:
		c.mu.Lock()
		lifted := c.awaitingLift
		c.awaitingLift, c.banExpiresAt = false, time.Time{}
		if c.banTimer != nil {
			c.banTimer.Stop()
			c.banTimer = nil
		}
		c.mu.Unlock()
		if lifted {
			return transport.BanLifted{EventHeader: h}, true
		}
		return transport.Connected{EventHeader: h}, true
	case *events.LoggedOut:
		// whatsmeow has deleted the device; forget the mapping and the client.
		// (whatsmeow may have cleared the store's ID already: the client's JID is kept on c.)
		c.mu.Lock()
		jid := c.jid
		c.mu.Unlock()
		if err := m.forgetPaired(context.Background(), c.id, jid); err != nil {
			m.cfg.Log.Errorf("%v", err)
		}
		m.drop(c)
		if e.Reason == events.ConnectFailureUnknownLogout {
			return transport.PermanentBan{EventHeader: h, Reason: int(e.Reason), Description: e.Reason.String()}, true
		}
		return transport.SessionInvalidated{EventHeader: h, Reason: int(e.Reason), Description: e.Reason.String(), OnConnect: e.OnConnect}, true
	case *events.TemporaryBan:
		m.banned(c, e.Expire)
		return transport.TemporaryBan{EventHeader: h, Code: int(e.Code), Description: e.Code.String(),
			Expire: e.Expire, ExpiresAt: h.At.Add(e.Expire)}, true
	case *events.StreamReplaced:
		return transport.StreamReplaced{EventHeader: h}, true
	case *events.ClientOutdated:
		return transport.ClientOutdated{EventHeader: h}, true
	case *events.KeepAliveTimeout:
		return transport.KeepAliveTimeout{EventHeader: h, ErrorCount: e.ErrorCount, LastSuccess: e.LastSuccess}, true
	case *events.ConnectFailure:
		return transport.ConnectFailure{EventHeader: h, Reason: int(e.Reason), Message: e.Message}, true
	case *events.Receipt:
		return mapReceipt(h, e)
	}
	return nil, false
}

// mapReceipt keeps delivered and read receipts from others for messages we sent.
func mapReceipt(h transport.EventHeader, e *events.Receipt) (transport.Event, bool) {
	var kind transport.ReceiptKind
	switch e.Type {
	case types.ReceiptTypeDelivered:
		kind = transport.ReceiptDelivered
	case types.ReceiptTypeRead:
		kind = transport.ReceiptRead
	default:
		return nil, false
	}
	if e.IsFromMe {
		return nil, false
	}
	var ids []uuid.UUID
	for _, wa := range e.MessageIDs {
		if id, ok := transport.ParseWAMessageID(wa); ok {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return nil, false
	}
	return transport.Receipt{EventHeader: h, MessageIDs: ids, Kind: kind, Timestamp: e.Timestamp, From: e.Sender.String()}, true
}

// banned records a temporary ban and schedules the reconnect at its expiry.
func (m *Manager) banned(c *conn, expire time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.banExpiresAt = m.cfg.Clock.Now().Add(expire)
	c.awaitingLift = true
	m.scheduleReconnectLocked(c, expire)
}

func (m *Manager) scheduleReconnectLocked(c *conn, after time.Duration) {
	if c.banTimer != nil {
		c.banTimer.Stop()
	}
	c.banTimer = m.cfg.Clock.AfterFunc(after, func() { m.reconnectAfterBan(c) })
}

// reconnectAfterBan connects c again once its ban has expired; the outcome arrives as an event
// (Connected → BanLifted, or another TemporaryBan). An attempt that cannot start is retried.
func (m *Manager) reconnectAfterBan(c *conn) {
	c.mu.Lock()
	if c.closed || c.banExpiresAt.IsZero() {
		c.mu.Unlock()
		return
	}
	c.banTimer = nil
	client := c.client
	c.mu.Unlock()
	client.Disconnect() // the refused login's socket, if whatsmeow still holds it
	if err := m.connect(client); err != nil {
		m.cfg.Log.Warnf("wmtransport: reconnect %s after ban: %v; retrying in %s", c.id, err, m.cfg.ReconnectBackoff)
		c.mu.Lock()
		if !c.closed {
			m.scheduleReconnectLocked(c, m.cfg.ReconnectBackoff)
		}
		c.mu.Unlock()
	}
}

package wmtransport

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/store/sqlstore"
	"go.mau.fi/whatsmeow/types"

	"github.com/waqueue/waqueue/adapters/transport"
)

// newPairing creates a client on a fresh device for connID, refusing a paired or pairing
// connection. Paired is judged by the shared database, not this node's memory: the connection
// may have been paired through another node.
//
// The client pairs and nothing more: whatsmeow's reconnect after pairing (WhatsApp's stream error
// 515, "restart required") is off, and the client is dropped at PairSuccess (see pairSucceeded).
// The session is then started by Connect on the node that holds the connection's lease, which
// may be another node: two clients of one device connected at once would have WhatsApp replace
// one stream with the other (stream:error conflict replaced) and may log the device out.
func (m *Manager) newPairing(ctx context.Context, connID string) (*conn, error) {
	jid, err := m.pairedJID(ctx, connID)
	if err != nil {
		return nil, fmt.Errorf("wmtransport: pair: %w", err)
	}
	if jid != "" {
		return nil, fmt.Errorf("wmtransport: pair %s: %w", connID, transport.ErrAlreadyPaired)
	}
	if m.lookup(connID) != nil {
		return nil, fmt.Errorf("wmtransport: pair %s: %w", connID, transport.ErrPairingInProgress)
	}
	client := whatsmeow.NewClient(m.container.NewDevice(), m.cfg.Log.Sub(connID))
	client.DisableLoginAutoReconnect = true
	return m.register(connID, client, true)
}

// pairSucceeded handles the pairing client's PairSuccess and returns the event to report: it
// records the mapping, then drops the client (disconnecting it) before Paired is reported, so
// that the session the lease owner starts on Paired (the dispatcher records SessionPaired; the
// owner connects when it sees it) is the only client of the device.
//
// When the connection was paired meanwhile through another pairing (another node's: a second QR
// code scanned), or the mapping cannot be saved, the new device is unlinked (logged out at
// WhatsApp, or deleted from the store when that fails) and PairingFailed is reported: the
// connection keeps its one device.
func (m *Manager) pairSucceeded(c *conn, jid types.JID) transport.Event {
	h := m.header(c.id)
	c.mu.Lock()
	c.pairing, c.jid = false, jid.String()
	client := c.client
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), unlinkTimeout)
	defer cancel()
	other, err := m.savePairing(ctx, c.id, jid)
	if err == nil && other == "" {
		m.drop(c)
		return transport.Paired{EventHeader: h, JID: jid.String(), Phone: "+" + jid.User}
	}
	reason := "the connection was paired through another pairing meanwhile (device " + other + ")"
	if err != nil {
		reason = err.Error()
		m.cfg.Log.Errorf("%v", err)
	}
	if lerr := client.Logout(ctx); lerr != nil {
		m.cfg.Log.Warnf("wmtransport: unlinking the surplus device %s of %s: %v; deleting it here", jid, c.id, lerr)
		if derr := client.Store.Delete(ctx); derr != nil && !errors.Is(derr, sqlstore.ErrDeviceIDMustBeSet) {
			m.cfg.Log.Errorf("wmtransport: deleting the surplus device %s of %s: %v", jid, c.id, derr)
		}
	}
	m.drop(c)
	return transport.PairingFailed{EventHeader: h, Reason: reason}
}

// unlinkTimeout bounds the mapping's save and a surplus device's logout at a pairing's success.
const unlinkTimeout = 30 * time.Second

// startQR opens the client's QR channel and connects; the channel outlives ctx (pairing lasts until
// the codes run out, about 160 seconds, or Disconnect).
func (m *Manager) startQR(ctx context.Context, c *conn) (<-chan whatsmeow.QRChannelItem, error) {
	items, err := c.client.GetQRChannel(context.WithoutCancel(ctx))
	if err != nil {
		m.drop(c)
		return nil, fmt.Errorf("wmtransport: pair %s: %w", c.id, err)
	}
	if err := m.connect(c.client); err != nil {
		m.drop(c)
		return nil, fmt.Errorf("wmtransport: pair %s: connect: %w", c.id, err)
	}
	return items, nil
}

// PairQR starts QR pairing; see transport.Transport. ctx bounds only the start.
func (m *Manager) PairQR(ctx context.Context, connID string) (<-chan string, error) {
	c, err := m.newPairing(ctx, connID)
	if err != nil {
		return nil, err
	}
	items, err := m.startQR(ctx, c)
	if err != nil {
		return nil, err
	}
	out := make(chan string, 8)
	go func() {
		defer close(out)
		m.followPairing(c, items, func(code string) {
			m.events.Emit(transport.QRCode{EventHeader: m.header(c.id), Codes: []string{code}})
			select {
			case out <- code:
			default: // the caller stopped reading; the QRCode event still carries the code
			}
		})
	}()
	return out, nil
}

// PairPhone starts phone-number pairing; see transport.Transport. It waits (bounded by ctx) for the
// login socket to be ready, as WhatsApp requires, then asks for the pairing code.
func (m *Manager) PairPhone(ctx context.Context, connID, phone string) (string, error) {
	digits, err := transport.PhoneDigits(phone)
	if err != nil {
		return "", fmt.Errorf("wmtransport: pair %s: %w", connID, err)
	}
	c, err := m.newPairing(ctx, connID)
	if err != nil {
		return "", err
	}
	items, err := m.startQR(ctx, c)
	if err != nil {
		return "", err
	}
	select {
	case first, ok := <-items:
		if !ok || first.Event != whatsmeow.QRChannelEventCode {
			m.drop(c)
			reason := "login socket closed"
			if ok {
				reason = pairingFailure(first)
			}
			return "", fmt.Errorf("wmtransport: pair %s: %s", connID, reason)
		}
	case <-ctx.Done():
		m.drop(c)
		return "", fmt.Errorf("wmtransport: pair %s: %w", connID, ctx.Err())
	}
	code, err := c.client.PairPhone(ctx, digits, true, whatsmeow.PairClientChrome, m.cfg.PairDisplayName)
	if err != nil {
		m.drop(c)
		return "", fmt.Errorf("wmtransport: pair %s: request pairing code: %w", connID, err)
	}
	m.events.Emit(transport.PairingCode{EventHeader: m.header(connID), Code: code})
	go m.followPairing(c, items, func(string) {}) // later QR codes are irrelevant when pairing by code
	return code, nil
}

// followPairing drains the QR channel until pairing ends. Success is reported by the PairSuccess
// event handler (Paired); any other end is reported here as PairingFailed and the client dropped.
func (m *Manager) followPairing(c *conn, items <-chan whatsmeow.QRChannelItem, onCode func(string)) {
	for item := range items {
		switch item.Event {
		case whatsmeow.QRChannelEventCode:
			onCode(item.Code)
		case whatsmeow.QRChannelSuccess.Event:
			c.mu.Lock()
			c.pairing = false
			c.mu.Unlock()
			return
		default:
			m.events.Emit(transport.PairingFailed{EventHeader: m.header(c.id), Reason: pairingFailure(item)})
			m.drop(c)
			return
		}
	}
}

func pairingFailure(item whatsmeow.QRChannelItem) string {
	if item.Error != nil {
		return fmt.Sprintf("%s: %v", item.Event, item.Error)
	}
	return item.Event
}

package wmtransport

import (
	"context"

	"fmt"

	"go.mau.fi/whatsmeow"

	"github.com/waqueue/waqueue/adapters/transport"
)

// newPairing creates a client on a fresh device for connID, refusing a paired or pairing connection.
func (m *Manager) newPairing(connID string) (*conn, error) {
	m.mu.Lock()
	_, paired := m.paired[connID]
	existing := m.conns[connID]
	m.mu.Unlock()
	if paired {
		return nil, fmt.Errorf("wmtransport: pair %s: %w", connID, transport.ErrAlreadyPaired)
	}
	if existing != nil {
		return nil, fmt.Errorf("wmtransport: pair %s: %w", connID, transport.ErrPairingInProgress)
	}
	device := m.container.NewDevice()
	return m.register(connID, whatsmeow.NewClient(device, m.cfg.Log.Sub(connID)), true)
}

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
	c, err := m.newPairing(connID)
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
	c, err := m.newPairing(connID)
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

package simulator

import (
	"sync"

	"github.com/waqueue/waqueue/adapters/transport"
)

// Devices is the simulated WhatsApp side that the simulators of several nodes in one process
// share (tests of a multi-node deployment): each connection's linked device — its stored
// session, as in the whatsmeow adapter's session store that the nodes share — and the one
// stream WhatsApp allows each device. With Options.Devices set a Simulator behaves as the
// whatsmeow adapter does on several nodes:
//
//   - PairQR and PairPhone refuse a connection paired through any simulator; a pairing stores
//     the device and reports Paired, and its client then ends (no Connected): Connect on the
//     node that runs the connection's session logs it in.
//   - Connect logs in a device paired through any simulator; one unpaired through another is
//     ErrNotPaired (a client still connected keeps running: deleting the stored session does
//     not end it, as with whatsmeow).
//   - A device connected through a second simulator replaces the first one's stream, as
//     WhatsApp does: that simulator's connection goes offline with StreamReplaced. Replaced
//     counts these: a multi-node test wants it to stay 0.
//
// Its methods are safe for concurrent use.
type Devices struct {
	mu       sync.Mutex
	devs     map[string]*device
	replaced int
}

type device struct {
	jid, phone string
	online     *Simulator // the simulator whose client holds the device's stream, or nil
}

// NewDevices returns an empty shared device store.
func NewDevices() *Devices { return &Devices{devs: map[string]*device{}} }

// Replaced returns how many times a device's stream was replaced by a second client.
func (d *Devices) Replaced() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.replaced
}

// Paired reports whether the connection has a stored device.
func (d *Devices) Paired(connID string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.devs[connID] != nil
}

// lookup returns the connection's device (jid, phone), if any.
func (d *Devices) lookup(connID string) (jid, phone string, ok bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	dev := d.devs[connID]
	if dev == nil {
		return "", "", false
	}
	return dev.jid, dev.phone, true
}

func (d *Devices) store(connID, jid, phone string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.devs[connID] = &device{jid: jid, phone: phone}
}

// remove deletes the connection's device.
func (d *Devices) remove(connID string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.devs, connID)
}

// goOnline records s's client as the device's stream and returns the simulator whose stream it
// replaces (nil when none). false: the device is not stored.
func (d *Devices) goOnline(connID string, s *Simulator) (*Simulator, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	dev := d.devs[connID]
	if dev == nil {
		return nil, false
	}
	prev := dev.online
	dev.online = s
	if prev == s {
		return nil, true
	}
	if prev != nil {
		d.replaced++
	}
	return prev, true
}

// goOffline ends s's stream of the device (if it holds it).
func (d *Devices) goOffline(connID string, s *Simulator) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if dev := d.devs[connID]; dev != nil && dev.online == s {
		dev.online = nil
	}
}

// replacedBy takes s's connection offline because another client of its device connected.
func (s *Simulator) replacedBy(connID string) {
	c := s.conn(connID, false)
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == transport.StateConnected || c.state == transport.StateTemporarilyBanned {
		c.stopTimers()
		c.state = transport.StateDisconnected
		s.events.Emit(transport.StreamReplaced{EventHeader: s.header(c.id)})
	}
}

// syncLocked brings c's view of its session in line with the shared devices (c.mu held): a
// device paired through another simulator is adopted (disconnected), and a stored session
// deleted through another one is forgotten unless this client is live (a live client keeps
// running). Without shared devices it does nothing.
func (s *Simulator) syncLocked(c *conn) {
	d := s.opts.Devices
	if d == nil || c.state == transport.StatePairing {
		return
	}
	jid, phone, ok := d.lookup(c.id)
	switch {
	case ok && (c.state == transport.StateUnpaired || c.jid != jid) && c.state != transport.StateConnected && c.state != transport.StateTemporarilyBanned:
		c.jid, c.phone, c.state = jid, phone, transport.StateDisconnected
	case !ok && c.state == transport.StateDisconnected:
		c.jid, c.phone, c.state = "", "", transport.StateUnpaired
	}
}

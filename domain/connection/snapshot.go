package connection

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
)

// SnapshotSchema is the version of the snapshot format. A snapshot of another schema is
// refused by Restore (ErrSnapshotSchema): rebuild from the events then.
const SnapshotSchema = 2

// ErrSnapshotSchema: a snapshot of an unsupported schema, or an unreadable one.
var ErrSnapshotSchema = errors.New("connection: unusable snapshot")

type snapshot struct {
	Schema       int                  `json:"schema"`
	Version      int64                `json:"version"`
	ID           string               `json:"id"`
	Tenant       string               `json:"tenant"`
	Phone        string               `json:"phone"`
	OnBan        OnBanPolicy          `json:"on_ban"`
	RegisteredAt time.Time            `json:"registered_at"`
	Link         LinkStatus           `json:"link"`
	LinkSince    time.Time            `json:"link_since"`
	Ban          *BanInfo             `json:"ban,omitempty"`
	Hold         *HoldInfo            `json:"hold,omitempty"`
	Clear        *ClearQueueRequested `json:"clear,omitempty"`
	LastClear    *ClearQueueRequested `json:"last_clear,omitempty"`
	LastSeq      uint64               `json:"last_seq"`
	Cursor       uint64               `json:"cursor"`
	Ahead        []purgedRange        `json:"ahead,omitempty"`
	Broadcasts   []BroadcastRange     `json:"broadcasts,omitempty"`
	InFlight     []flightJSON         `json:"in_flight,omitempty"`
	Disrupted    int64                `json:"disrupted"`
	// Handed is the ranges of positions handed over, flattened: from, to, from, to, ...
	Handed   []uint64 `json:"handed,omitempty"`
	Counters Counters `json:"counters"`

	// Overruled is set while clearing once a hold, ban or session loss was recorded since the
	// request (absent in snapshots taken before it existed: false, as it was).
	Overruled bool `json:"overruled,omitempty"`
	// Epoch is the highest lease epoch recorded (absent before leases existed: 0).
	Epoch uint64 `json:"epoch,omitempty"`
	// SendingPolicy is the recorded sending policy (absent before one was recorded: the
	// defaults).
	SendingPolicy *SendingPolicy `json:"sending_policy,omitempty"`
}

// flightJSON is a message in flight in a snapshot.
type flightJSON struct {
	MessageID uuid.UUID `json:"message_id"`
	flightEntry
}

// Snapshot returns the state as JSON, for a cache: Restore(Snapshot()) is equal to the
// state, and applying the events after Version() to it gives the same state as loading the
// whole stream. Its size is bounded like the state (see Connection), not by the number of
// messages. The encoding is deterministic.
func (c *Connection) Snapshot() ([]byte, error) {
	s := snapshot{
		Schema: SnapshotSchema, Version: c.version, ID: c.id, Tenant: c.tenant, Phone: c.phone, OnBan: c.onBan,
		RegisteredAt: c.regAt, Link: c.link, LinkSince: c.linkAt, Ban: c.ban, Hold: c.hold, Clear: c.clear,
		LastClear: c.last, Overruled: c.overruled, LastSeq: c.lastSeq, Cursor: c.cursor, Ahead: c.ahead, Broadcasts: c.bcasts,
		Disrupted: c.disrupted, Counters: c.count, Epoch: c.epoch,
	}
	if !c.sending.IsZero() {
		p := c.sending
		s.SendingPolicy = &p
	}
	for _, r := range c.handed {
		s.Handed = append(s.Handed, r.From, r.To)
	}
	for _, m := range c.InFlight() {
		s.InFlight = append(s.InFlight, flightJSON{MessageID: m.MessageID, flightEntry: c.flight[m.MessageID]})
	}
	b, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("connection: snapshot %q: %w", c.id, err)
	}
	return b, nil
}

// Restore returns the state saved by Snapshot. It fails with an error matching
// ErrSnapshotSchema for a snapshot of another schema or one that does not decode.
func Restore(data []byte) (*Connection, error) {
	var s snapshot
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSnapshotSchema, err)
	}
	if s.Schema != SnapshotSchema {
		return nil, fmt.Errorf("%w: schema %d, want %d", ErrSnapshotSchema, s.Schema, SnapshotSchema)
	}
	c := &Connection{
		version: s.Version, id: s.ID, tenant: s.Tenant, phone: s.Phone, region: regionOf(s.Phone), onBan: s.OnBan,
		regAt: s.RegisteredAt, link: s.Link, linkAt: s.LinkSince, ban: s.Ban, hold: s.Hold, clear: s.Clear,
		last: s.LastClear, overruled: s.Overruled, lastSeq: s.LastSeq, cursor: s.Cursor, ahead: s.Ahead, bcasts: s.Broadcasts,
		flight: make(map[uuid.UUID]flightEntry, len(s.InFlight)), disrupted: s.Disrupted, count: s.Counters, epoch: s.Epoch,
	}
	if s.SendingPolicy != nil {
		c.sending = *s.SendingPolicy
	}
	if len(s.Handed)%2 != 0 {
		return nil, fmt.Errorf("%w: odd number of handed bounds", ErrSnapshotSchema)
	}
	if len(s.Handed) > 0 {
		c.handed = make([]SeqRange, 0, len(s.Handed)/2)
		for i := 0; i < len(s.Handed); i += 2 {
			c.handed = append(c.handed, SeqRange{From: s.Handed[i], To: s.Handed[i+1]})
		}
	}
	if c.clear != nil && c.last != nil && c.clear.ClearID == c.last.ClearID {
		c.clear = c.last // one request, shared as after Apply
	}
	for _, m := range s.InFlight {
		c.flight[m.MessageID] = m.flightEntry
	}
	if c.ahead != nil {
		c.ahead = slices.Clip(c.ahead)
	}
	return c, nil
}

package integration

import (
	"encoding/json"
	"strconv"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/domain/connection"
)

// The integration events of a broadcast are one message.status_changed (queued) per message:
// up to connection.BroadcastChunk per BroadcastQueued, 100,000 per broadcast. encoding/json
// cost more than everything else the publisher does for them (reflection, and the envelope's
// Data compacted and re-escaped once more), so both are written here by hand, byte for byte
// what json.Marshal writes (TestEncodingMatchesJSON compares them).

// appendEvent appends ie's JSON exactly as json.Marshal(ie) writes it. ie.Data must be what
// json.Marshal writes (compact, HTML-escaped), as Translate and TranslateAll give it.
func appendEvent(b []byte, ie Event) ([]byte, error) {
	at, err := ie.OccurredAt.MarshalJSON()
	if err != nil {
		return nil, err
	}
	b = append(b, `{"id":"`...)
	b = appendUUID(b, ie.ID)
	b = append(b, `","type":`...)
	b = appendString(b, ie.Type)
	b = append(b, `,"occurred_at":`...)
	b = append(b, at...)
	b = append(b, `,"tenant_id":`...)
	b = appendString(b, ie.TenantID)
	b = append(b, `,"connection_id":`...)
	b = appendString(b, ie.ConnectionID)
	b = append(b, `,"position":`...)
	b = appendString(b, ie.Position)
	b = append(b, `,"data":`...)
	if ie.Data == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, ie.Data...)
	}
	return append(b, '}'), nil
}

// appendQueued appends the JSON of MessageStatusChanged{MessageID: id, Seq: seq, Status:
// "queued", BroadcastID: bid, Recipient: recipient} as json.Marshal writes it.
func appendQueued(b []byte, id uuid.UUID, seq uint64, bid uuid.UUID, recipient string) []byte {
	b = append(b, `{"message_id":"`...)
	b = appendUUID(b, id)
	b = append(b, `","seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, `,"status":"queued"`...)
	if bid != uuid.Nil {
		b = append(b, `,"broadcast_id":"`...)
		b = appendUUID(b, bid)
		b = append(b, '"')
	}
	if recipient != "" {
		b = append(b, `,"recipient":`...)
		b = appendString(b, recipient)
	}
	return append(b, '}')
}

func appendUUID(b []byte, id uuid.UUID) []byte {
	var s [36]byte
	const hex = "0123456789abcdef"
	j := 0
	for i, c := range id {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			s[j] = '-'
			j++
		}
		s[j], s[j+1] = hex[c>>4], hex[c&0x0f]
		j += 2
	}
	return append(b, s[:]...)
}

// appendString appends s as a JSON string the way json.Marshal writes it: plain printable
// ASCII as is, anything json.Marshal would escape (quotes, backslashes, <, >, &, control and
// non-ASCII characters) through json.Marshal itself.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// translateChunk returns the integration events of BroadcastQueued b, recorded as e, of
// connection connID: what translateOne gives for each of b.Messages(), its Data written by
// appendQueued.
func translateChunk(e eventstore.RecordedEvent, connID string, b connection.BroadcastQueued) []Event {
	out := make([]Event, len(b.Recipients))
	at := b.QueuedAt.UTC()
	pos := e.Position.String()
	// One buffer for every body of the chunk (each ~170 bytes).
	buf := make([]byte, 0, len(b.Recipients)*192)
	for i := range b.Recipients {
		mq := b.Message(i)
		start := len(buf)
		buf = appendQueued(buf, mq.MessageID, mq.Seq, mq.BroadcastID, mq.Recipient)
		out[i] = Event{
			ID: EventID(connection.EventID(e.Stream, 0, mq), TypeMessageStatusChanged), Type: TypeMessageStatusChanged,
			OccurredAt: at, TenantID: e.Metadata.TenantID, ConnectionID: connID, Position: pos,
			Data: json.RawMessage(buf[start:len(buf):len(buf)]),
		}
	}
	return out
}

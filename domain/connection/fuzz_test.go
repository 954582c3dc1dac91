package connection_test

import (
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/waqueue/waqueue/domain/connection"
)

var knownCodes = map[connection.Code]bool{
	connection.CodeInvalidID: true, connection.CodeInvalidPhone: true, connection.CodeTextEmpty: true,
	connection.CodeTextTooLong: true, connection.CodeInvalidText: true, connection.CodeInvalidTTL: true,
	connection.CodeNoRecipients: true, connection.CodeTooManyRecipients: true, connection.CodeDuplicateRecipient: true,
	connection.CodeMissingActor: true, connection.CodeMissingReason: true, connection.CodeTooLong: true,
	connection.CodeMissingIdempotencyKey: true, connection.CodeInvalidBan: true, connection.CodeInvalidPolicy: true,
	connection.CodeMissingMessage: true,
}

// FuzzEnqueue checks command validation: any input either yields exactly one well-formed
// MessageQueued (E.164 recipient, text kept as given and within limits) or a *ValidationError
// with a known stable code, never a panic.
func FuzzEnqueue(f *testing.F) {
	f.Add("k1", alice, "hi", int64(0))
	f.Add("k2", "0170 7654321", "héllo", int64(3600))
	f.Add("", "+1", "", int64(-1))
	c := load(f, base)
	f.Fuzz(func(t *testing.T, key, recipient, text string, ttlSeconds int64) {
		ttl := time.Duration(ttlSeconds) * time.Second
		events, err := c.Enqueue(connection.EnqueueMessage{IdempotencyKey: key, Recipient: recipient, Text: text, TTL: ttl, Actor: "svc"}, t0)
		if err != nil {
			var ve *connection.ValidationError
			if !errors.As(err, &ve) || !errors.Is(err, connection.ErrInvalidCommand) || !knownCodes[ve.Code] {
				t.Fatalf("error %v (%T) is not a ValidationError with a known code", err, err)
			}
			if events != nil {
				t.Fatalf("events with an error: %v", events)
			}
			return
		}
		if len(events) != 1 {
			t.Fatalf("%d events", len(events))
		}
		q, ok := events[0].(connection.MessageQueued)
		if !ok {
			t.Fatalf("event %T", events[0])
		}
		if !strings.HasPrefix(q.Recipient, "+") {
			t.Fatalf("recipient %q not E.164", q.Recipient)
		}
		if again, err := connection.NormalizePhone("r", q.Recipient, ""); err != nil || again != q.Recipient {
			t.Fatalf("normalised recipient %q does not normalise to itself: %q, %v", q.Recipient, again, err)
		}
		if n := utf8.RuneCountInString(q.Text); q.Text != text || !utf8.ValidString(text) || n == 0 || n > connection.MaxTextRunes {
			t.Fatalf("accepted text of %d runes: %q", n, text)
		}
		if ttl < 0 || ttl > connection.MaxTTL || (ttl > 0) != !q.ExpiresAt.IsZero() {
			t.Fatalf("accepted ttl %v with expiry %v", ttl, q.ExpiresAt)
		}
		if q.MessageID != connection.MessageIDFor(tenant, connID, key) || q.Seq != 1 {
			t.Fatalf("id %s seq %d", q.MessageID, q.Seq)
		}
		// The fingerprint is canonical: the request with the recipient as stored (E.164), under
		// any key, has the same one, and a changed text has another.
		if len(q.Fingerprint) != len("fp1:")+64 || !strings.HasPrefix(q.Fingerprint, "fp1:") {
			t.Fatalf("fingerprint %q", q.Fingerprint)
		}
		canon, err := c.EnqueueFingerprint(connection.EnqueueMessage{IdempotencyKey: "other", Recipient: q.Recipient, Text: text, TTL: ttl})
		if err != nil || canon != q.Fingerprint {
			t.Fatalf("fingerprint of the normalised request %q (%v), want the event's %q", canon, err, q.Fingerprint)
		}
		if changed, _ := c.EnqueueFingerprint(connection.EnqueueMessage{Recipient: q.Recipient, Text: text + ".", TTL: ttl}); changed == q.Fingerprint {
			t.Fatalf("another text has the same fingerprint %q", changed)
		}
		if connection.CheckReplay(connID, "enqueue", q.Fingerprint, canon) != nil {
			t.Fatalf("CheckReplay refuses the same request")
		}
	})
}

// FuzzDecode checks that decoding never panics and that what decodes re-encodes stably.
func FuzzDecode(f *testing.F) {
	for _, e := range oneOfEach() {
		typ, data, err := connection.Encode(e)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(typ, data)
	}
	f.Fuzz(func(t *testing.T, typ string, data []byte) {
		e, err := connection.Decode(typ, data)
		if err != nil {
			if !errors.Is(err, connection.ErrUnknownEventType) && !errors.Is(err, connection.ErrUndecodableEvent) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		typ2, data2, err := connection.Encode(e)
		if err != nil || typ2 != typ {
			t.Fatalf("re-encode: %q %v", typ2, err)
		}
		e2, err := connection.Decode(typ2, data2)
		if err != nil {
			t.Fatalf("re-decode %s: %v", data2, err)
		}
		_, data3, _ := connection.Encode(e2)
		if string(data3) != string(data2) {
			t.Fatalf("encoding not stable:\n%s\n%s", data2, data3)
		}
	})
}

package connection

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// sameQueued compares two MessageQueued field by field (times by instant and offset: a decoded
// offset is a fresh *time.Location each time).
func sameQueued(a, b MessageQueued) bool {
	sameTime := func(x, y time.Time) bool {
		_, ox := x.Zone()
		_, oy := y.Zone()
		return x.Equal(y) && ox == oy && x.IsZero() == y.IsZero() && (x.Location() == time.UTC) == (y.Location() == time.UTC)
	}
	ta, tb := a, b
	ta.ExpiresAt, ta.QueuedAt, tb.ExpiresAt, tb.QueuedAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	return ta == tb && sameTime(a.ExpiresAt, b.ExpiresAt) && sameTime(a.QueuedAt, b.QueuedAt)
}

// checkLikeJSON fails unless decodeMessageQueued(data) gives what json.Unmarshal gives: the same
// value, or an error for both.
func checkLikeJSON(t *testing.T, data []byte) {
	t.Helper()
	var want MessageQueued
	wantErr := json.Unmarshal(data, &want)
	got, err := decodeMessageQueued(data)
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("%s: error %v, encoding/json's %v", data, err, wantErr)
	}
	if err == nil && !sameQueued(got.(MessageQueued), want) {
		t.Fatalf("%s:\n got %+v\nwant %+v", data, got, want)
	}
	if fast, ok := queuedFast(data, nil); ok && (wantErr != nil || !sameQueued(fast, want)) {
		t.Fatalf("%s: fast path accepted %+v; encoding/json: %+v, %v", data, fast, want, wantErr)
	}
}

func randomQueued(rng *rand.Rand) MessageQueued {
	pick := func(ss ...string) string { return ss[rng.IntN(len(ss))] }
	at := func() time.Time {
		t := time.Unix(rng.Int64N(4e9), rng.Int64N(1e9))
		switch rng.IntN(4) {
		case 0:
			return t.UTC()
		case 1:
			return t.In(time.FixedZone("", 2*3600+1800))
		case 2:
			return t.Truncate(time.Second).UTC()
		}
		return time.Time{}
	}
	mq := MessageQueued{
		MessageID:      uuid.New(),
		Seq:            []uint64{0, 1, 7, uint64(rng.Int64()), math.MaxUint64}[rng.IntN(5)],
		Recipient:      pick("+4915112345678", "", "+1 555", "+49ünïcode", "a\"b", `back\slash`, "tab\t", "\u2028", "<&>"),
		Text:           pick("", "hello", "line\nbreak", "emoji 🙂", "quote \" here"),
		IdempotencyKey: pick("", "key-1", "ключ"),
		Fingerprint:    pick("", "fp:abc"),
		ExpiresAt:      at(),
		QueuedBy:       pick("", "clearkit", "api-key:1"),
		QueuedAt:       at(),
	}
	if rng.IntN(2) == 0 {
		mq.BroadcastID = uuid.New()
		mq.BroadcastIndex = []int{0, 1, 4999, math.MaxInt}[rng.IntN(4)]
		mq.MessageID = BroadcastMessageID(mq.BroadcastID, mq.BroadcastIndex)
	}
	return mq
}

// TestDecodeMessageQueuedLikeJSON checks the fast path against encoding/json on Encode's bodies
// (which it must accept when they hold no escape) and on variations of them that it must leave
// to encoding/json or read the same way.
func TestDecodeMessageQueuedLikeJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(12, 2026))
	accepted := 0
	for range 2000 {
		mq := randomQueued(rng)
		_, data, err := Encode(mq)
		if err != nil {
			t.Fatal(err)
		}
		checkLikeJSON(t, data)
		if _, ok := queuedFast(data, nil); ok {
			accepted++
		} else if !strings.Contains(string(data), `\`) {
			t.Fatalf("fast path declined an escape-free body Encode wrote: %s", data)
		}
		s := string(data)
		for _, v := range []string{
			" " + s, s + " ", s + "x", s[:len(s)-1], s[1:], strings.Replace(s, ":", ": ", 1),
			strings.Replace(s, `"seq"`, `"Seq"`, 1), strings.Replace(s, `"seq":`, `"seq":0`, 1),
			strings.Replace(s, `"seq":`, `"seq":-`, 1), strings.Replace(s, `"seq":`, `"seq":1.`, 1),
			strings.Replace(s, `"seq":`, `"seq":1e`, 1), strings.Replace(s, `"seq":`, `"seq":"`, 1),
			strings.Replace(s, `{`, `{"unknown":1,`, 1), strings.Replace(s, `{`, `{"seq":3,`, 1),
			strings.Replace(s, `"queued_by":"`, `"queued_by":null,"x":"`, 1),
			strings.Replace(s, `"queued_at":"`, `"queued_at":"x`, 1),
			strings.Replace(s, `"message_id":"`, `"message_id":"{`, 1),
			strings.Replace(s, `"recipient":"`, "\"recipient\":\"\x01", 1),
			strings.Replace(s, `"recipient":"`, "\"recipient\":\"\xff", 1),
			strings.Replace(s, `"recipient":"`, `"recipient":"\u00e9`, 1),
			strings.Replace(s, `}`, `,"broadcast_index":-1}`, 1),
			strings.Replace(s, `}`, `,"broadcast_index":9223372036854775808}`, 1),
			strings.Replace(s, `}`, `,"seq":18446744073709551616}`, 1),
			strings.Replace(s, `}`, `,}`, 1), "{}", "null", "",
		} {
			checkLikeJSON(t, []byte(v))
		}
	}
	if accepted < 500 {
		t.Fatalf("the fast path read only %d of 2000 bodies", accepted)
	}
}

// TestQueuedDecoderLikeJSON decodes a stream of bodies through one QueuedDecoder, as a
// projection decodes a batch: bodies repeating the times and queued_by of the one before (which
// it reuses), bodies changing one of them, bodies without them, and bodies the fast path
// declines or encoding/json refuses in between. Every result must be json.Unmarshal's, and
// every refusal a *DecodeError.
func TestQueuedDecoderLikeJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 2026))
	times := []time.Time{{}, time.Date(2026, 12, 2, 3, 4, 5, 123456000, time.UTC),
		time.Date(2026, 12, 2, 3, 4, 5, 123457000, time.UTC), time.Date(2026, 12, 2, 4, 4, 5, 0, time.FixedZone("", 3600))}
	bys := []string{"", "clearkit", "clearkiu", "api-key:1"}
	var d QueuedDecoder
	for i := range 5000 {
		mq := randomQueued(rng)
		mq.QueuedAt, mq.ExpiresAt, mq.QueuedBy = times[rng.IntN(len(times))], times[rng.IntN(len(times))], bys[rng.IntN(len(bys))]
		_, data, err := Encode(mq)
		if err != nil {
			t.Fatal(err)
		}
		s := string(data)
		switch rng.IntN(6) {
		case 0:
			s = strings.Replace(s, `"queued_at":"`, `"queued_at":"x`, 1)
		case 1:
			s = strings.Replace(s, `"queued_at":"2026-12-02T03:04:05.123456Z"`, `"queued_at":"2026-12-02T03:04:05.123456+00:00"`, 1)
		case 2:
			s = strings.Replace(s, `{`, `{ `, 1) // declined by the fast path
		}
		var want MessageQueued
		wantErr := json.Unmarshal([]byte(s), &want)
		got, err := d.Decode([]byte(s))
		if (err != nil) != (wantErr != nil) {
			t.Fatalf("body %d %s: error %v, encoding/json's %v", i, s, err, wantErr)
		}
		if err != nil {
			var de *DecodeError
			if !errors.As(err, &de) || de.Type != TypeMessageQueued {
				t.Fatalf("body %d: error %v, want a *DecodeError of %s", i, err, TypeMessageQueued)
			}
			continue
		}
		if !sameQueued(got, want) {
			t.Fatalf("body %d %s:\n got %+v\nwant %+v", i, s, got, want)
		}
	}
}

// TestCanonicalUUIDLikeParseBytes checks the fast path's uuid reader against uuid.ParseBytes on
// 36-byte strings: canonical ones in either case, and each with one byte replaced by every
// other byte value (a digit changed, a non-digit, a dash moved or lost).
func TestCanonicalUUIDLikeParseBytes(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 2026))
	for range 50 {
		id := uuid.New()
		for _, s := range []string{id.String(), strings.ToUpper(id.String())} {
			for pos := range len(s) {
				for _, c := range []byte{s[pos], '-', '0', '9', 'a', 'f', 'g', 'A', 'F', 'G', '"', '\\', 0, 0xff, byte(rng.IntN(256))} {
					b := []byte(s)
					b[pos] = c
					want, wantErr := uuid.ParseBytes(b)
					var got uuid.UUID
					ok := canonicalUUID(b, &got)
					if ok != (wantErr == nil) || (ok && got != want) {
						t.Fatalf("%q: canonicalUUID %s, %v; uuid.ParseBytes %s, %v", b, got, ok, want, wantErr)
					}
				}
			}
		}
	}
}

// FuzzQueuedFast checks that whatever the fast path accepts, encoding/json reads the same way.
func FuzzQueuedFast(f *testing.F) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20 {
		_, data, _ := Encode(randomQueued(rng))
		f.Add(data)
	}
	f.Add([]byte(`{}`))
	f.Add([]byte(fmt.Sprintf(`{"seq":%d}`, uint64(math.MaxUint64))))
	f.Fuzz(func(t *testing.T, data []byte) { checkLikeJSON(t, data) })
}

func BenchmarkDecodeMessageQueued(b *testing.B) {
	bid := uuid.New()
	_, data, _ := Encode(MessageQueued{MessageID: BroadcastMessageID(bid, 42), Seq: 123456, Recipient: "+4915112345678",
		BroadcastID: bid, BroadcastIndex: 42, QueuedBy: "clearkit", QueuedAt: time.Now().UTC()})
	b.Run("fast", func(b *testing.B) {
		for b.Loop() {
			if _, err := decodeMessageQueued(data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("QueuedDecoder", func(b *testing.B) {
		var d QueuedDecoder
		for b.Loop() {
			if _, err := d.Decode(data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding/json", func(b *testing.B) {
		for b.Loop() {
			if _, err := decodeAs[MessageQueued](data); err != nil {
				b.Fatal(err)
			}
		}
	})
}

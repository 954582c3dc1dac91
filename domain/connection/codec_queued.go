package connection

import (
	"bytes"
	"encoding/json"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// decodeMessageQueued decodes a MessageQueued body. The bodies Encode writes (encoding/json of
// the struct: its keys in order, no whitespace, no escapes in the values that hold none) are
// read by queuedFast, several times faster than encoding/json (issue 12: decoding every
// MessageQueued was most of a projection catch-up's CPU); anything else — another key order,
// whitespace, an escape, an unknown or a case-folded key, null — is left to encoding/json, so
// the result is always what json.Unmarshal gives.
func decodeMessageQueued(data []byte) (Event, error) {
	if mq, ok := queuedFast(data, nil); ok {
		return mq, nil
	}
	return decodeAs[MessageQueued](data)
}

// QueuedDecoder decodes MessageQueued bodies, giving what Decode gives, faster over many of them:
// it returns the event as a value (no allocation for an Event interface), and it remembers the
// last queued_at, expires_at and queued_by it read, reusing them when the next body repeats
// them, as the messages of a broadcast do (issue 12: parsing the times and copying the strings
// of every MessageQueued of a catch-up). The zero value is ready. It is not safe for concurrent
// use.
type QueuedDecoder struct {
	c queuedCache
}

// queuedCache is what a QueuedDecoder remembers; raw are the quoted times as read (slices of
// bodies, which are never modified).
type queuedCache struct {
	queuedAt, expiresAt lastTime
	queuedBy            string
}

type lastTime struct {
	raw []byte
	t   time.Time
}

// Decode decodes a MessageQueued body. Its error is Decode's (a *DecodeError).
func (d *QueuedDecoder) Decode(data []byte) (MessageQueued, error) {
	if mq, ok := queuedFast(data, &d.c); ok {
		return mq, nil
	}
	var mq MessageQueued
	if err := json.Unmarshal(data, &mq); err != nil {
		return MessageQueued{}, &DecodeError{Type: TypeMessageQueued, Err: err}
	}
	return mq, nil
}

// queuedFast reads data as the JSON of a MessageQueued written without whitespace, escapes or
// unknown keys. ok is false when data is anything else (then it may still be valid JSON: the
// caller decodes it the general way); when ok is true the result is what json.Unmarshal gives.
// c, if not nil, holds values of earlier bodies that a repeated one reuses, and is updated.
func queuedFast(data []byte, c *queuedCache) (mq MessageQueued, ok bool) {
	var qat, exp *lastTime
	if c != nil {
		qat, exp = &c.queuedAt, &c.expiresAt
	}
	r := fastReader{b: data}
	if !r.byte('{') {
		return mq, false
	}
	if r.byte('}') {
		return mq, r.end()
	}
	for {
		key, ok := r.key()
		if !ok || !r.byte(':') {
			return mq, false
		}
		switch string(key) { // no allocation: the compiler compares in place
		case "message_id":
			ok = r.uuid(&mq.MessageID)
		case "seq":
			mq.Seq, ok = r.uint()
		case "recipient":
			mq.Recipient, ok = r.text()
		case "text":
			mq.Text, ok = r.text()
		case "broadcast_id":
			ok = r.uuid(&mq.BroadcastID)
		case "broadcast_index":
			var n uint64
			n, ok = r.uint()
			ok = ok && n <= uint64(maxInt)
			mq.BroadcastIndex = int(n)
		case "idempotency_key":
			mq.IdempotencyKey, ok = r.text()
		case "fingerprint":
			mq.Fingerprint, ok = r.text()
		case "expires_at":
			ok = r.time(&mq.ExpiresAt, exp)
		case "queued_by":
			if c == nil {
				mq.QueuedBy, ok = r.text()
				break
			}
			var by []byte
			if by, ok = r.plainString(); ok {
				if string(by) != c.queuedBy { // compared in place
					c.queuedBy = string(by)
				}
				mq.QueuedBy = c.queuedBy
			}
		case "queued_at":
			ok = r.time(&mq.QueuedAt, qat)
		default:
			return mq, false
		}
		if !ok {
			return mq, false
		}
		if r.byte('}') {
			return mq, r.end()
		}
		if !r.byte(',') {
			return mq, false
		}
	}
}

const maxInt = int(^uint(0) >> 1)

// fastReader reads the subset of JSON queuedFast accepts.
type fastReader struct {
	b []byte
	i int
}

func (r *fastReader) end() bool { return r.i == len(r.b) }

// byte consumes c if it is next.
func (r *fastReader) byte(c byte) bool {
	if r.i < len(r.b) && r.b[r.i] == c {
		r.i++
		return true
	}
	return false
}

// plainString consumes a string without escapes or control characters and returns its bytes
// (shared with the input). Non-ASCII bytes must be valid UTF-8: encoding/json would replace
// invalid ones.
func (r *fastReader) plainString() ([]byte, bool) {
	if !r.byte('"') {
		return nil, false
	}
	n := bytes.IndexByte(r.b[r.i:], '"')
	if n < 0 {
		return nil, false
	}
	str := r.b[r.i : r.i+n]
	ascii := true
	for _, c := range str {
		if c < 0x20 || c == '\\' {
			return nil, false
		}
		if c >= utf8.RuneSelf {
			ascii = false
		}
	}
	if !ascii && !utf8.Valid(str) {
		return nil, false
	}
	r.i += n + 1
	return str, true
}

func (r *fastReader) text() (string, bool) {
	s, ok := r.plainString()
	return string(s), ok
}

// uint consumes a JSON number that is a non-negative integer without leading zeros, fraction or
// exponent, and fits a uint64.
func (r *fastReader) uint() (uint64, bool) {
	start := r.i
	var n uint64
	for r.i < len(r.b) && r.b[r.i] >= '0' && r.b[r.i] <= '9' {
		d := uint64(r.b[r.i] - '0')
		if n > (^uint64(0)-d)/10 {
			return 0, false
		}
		n = n*10 + d
		r.i++
	}
	digits := r.i - start
	if digits == 0 || (digits > 1 && r.b[start] == '0') {
		return 0, false
	}
	return n, true // a fraction or an exponent would follow: the caller then finds no ',' or '}'
}

// key consumes a string and returns its bytes, unchecked: only the keys of MessageQueued are
// read on, and a string that is one of them as it stands holds no escape or control character
// (a key written with an escape is then unknown, and the caller leaves the body to
// encoding/json).
func (r *fastReader) key() ([]byte, bool) {
	if !r.byte('"') {
		return nil, false
	}
	n := bytes.IndexByte(r.b[r.i:], '"')
	if n < 0 {
		return nil, false
	}
	k := r.b[r.i : r.i+n]
	r.i += n + 1
	return k, true
}

// uuid consumes a string and parses it as encoding/json does (uuid.UUID.UnmarshalText). The
// canonical form (36 characters, hex digits and four dashes: what Encode writes) is read in
// place; any other string goes to UnmarshalText.
func (r *fastReader) uuid(id *uuid.UUID) bool {
	if b := r.b[r.i:]; len(b) >= 38 && b[0] == '"' && b[37] == '"' && canonicalUUID(b[1:37], id) {
		r.i += 38
		return true
	}
	s, ok := r.plainString()
	return ok && id.UnmarshalText(s) == nil
}

// canonicalUUID parses s as xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx (hex digits of either case)
// into id, as uuid.ParseBytes does; false (id unspecified) for anything else.
func canonicalUUID(s []byte, id *uuid.UUID) bool {
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return false
	}
	for j, i := range uuidDigitPairs {
		hi, lo := unhex(s[i]), unhex(s[i+1])
		if hi > 15 || lo > 15 {
			return false
		}
		id[j] = hi<<4 | lo
	}
	return true
}

// uuidDigitPairs are where the 16 bytes' digit pairs start in a canonical uuid.
var uuidDigitPairs = [16]int{0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34}

// unhex is the value of hex digit c, or 255.
func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10
	}
	return 255
}

// time consumes a string and parses it as encoding/json does (time.Time.UnmarshalJSON, which
// is given the quotes too). A string equal to last's (if not nil) is last's time, and a time
// parsed becomes last's.
func (r *fastReader) time(t *time.Time, last *lastTime) bool {
	start := r.i
	if _, ok := r.plainString(); !ok {
		return false
	}
	raw := r.b[start:r.i]
	if last != nil && last.raw != nil && bytes.Equal(raw, last.raw) {
		*t = last.t
		return true
	}
	if t.UnmarshalJSON(raw) != nil {
		return false
	}
	if last != nil {
		last.raw, last.t = raw, *t
	}
	return true
}

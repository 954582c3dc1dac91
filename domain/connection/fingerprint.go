package connection

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash"
	"strconv"
	"time"
)

// Request fingerprints bind an idempotency key to the request it was first accepted with (G5).
//
// The key alone already scopes the result: the message, broadcast and clear ids derive from
// tenant, connection, route and key (MessageIDFor, BroadcastIDFor, ClearIDFor), so keys of
// different connections or routes never meet. The fingerprint covers what the key does not: the
// request's content, taken from the decided, normalised command rather than from its bytes, so
// JSON key order, whitespace, a recipient written "+49 170 …" or "+49170…", or a broadcast sent
// as JSON or as CSV with the same numbers give the same fingerprint. It is recorded in the
// event that accepted the key (MessageQueued, BroadcastStarted, ClearQueueRequested) and so is
// durable and rebuilt with the stream. Events recorded before fingerprints existed carry none:
// an empty stored fingerprint is "unknown" and every request with that key is a replay.
//
// Nothing about keys is kept in memory, by the aggregate or elsewhere: the event that accepted a
// key is found through the event store's id index (its id derives from the key), so a broadcast
// of 100,000 recipients costs one fingerprint string in one event, and hashing its recipients
// keeps no copy of them.

// fingerprintVersion starts every fingerprint's input and is its text prefix; a change of the
// canonical form gets a new version (a stored fingerprint of another version counts as unknown).
const fingerprintVersion = "fp1"

// fingerprinter builds a fingerprint from a route name and length-prefixed fields, so that no
// two field lists give the same input.
type fingerprinter struct{ h hash.Hash }

func newFingerprinter(route string) *fingerprinter {
	f := &fingerprinter{h: sha256.New()}
	f.str(fingerprintVersion)
	f.str(route)
	return f
}

func (f *fingerprinter) str(s string) {
	var n [binary.MaxVarintLen64]byte
	f.h.Write(n[:binary.PutUvarint(n[:], uint64(len(s)))])
	f.h.Write([]byte(s))
}

func (f *fingerprinter) dur(d time.Duration) { f.str(strconv.FormatInt(int64(d), 10)) }

func (f *fingerprinter) sum() string {
	return fingerprintVersion + ":" + hex.EncodeToString(f.h.Sum(nil))
}

// CheckReplay decides whether a request with fingerprint requested may be answered with the
// result recorded under the same key with fingerprint stored: nil if they are equal or stored is
// unknown (empty, or of another fingerprint version: events recorded before fingerprints); a
// *KeyReusedError (ErrIdempotencyKeyReused) otherwise. route names the route for the error.
func CheckReplay(connID, route, stored, requested string) error {
	if stored == "" || stored == requested || !currentVersion(stored) {
		return nil
	}
	return &KeyReusedError{ConnectionID: connID, Route: route}
}

func currentVersion(fp string) bool {
	return len(fp) > len(fingerprintVersion) && fp[:len(fingerprintVersion)+1] == fingerprintVersion+":"
}

// EnqueueFingerprint returns the fingerprint of cmd on this connection: its recipient in
// E.164, text and TTL. It fails with the *ValidationError Enqueue would return for a recipient
// that is not a phone number.
func (c *Connection) EnqueueFingerprint(cmd EnqueueMessage) (string, error) {
	recipient, err := NormalizePhone("recipient", cmd.Recipient, c.region)
	if err != nil {
		return "", err
	}
	return enqueueFingerprint(recipient, cmd.Text, cmd.TTL), nil
}

func enqueueFingerprint(recipientE164, text string, ttl time.Duration) string {
	f := newFingerprinter("enqueue")
	f.str(recipientE164)
	f.str(text)
	f.dur(ttl)
	return f.sum()
}

// broadcastFingerprint covers the normalised recipients in order, the text and the TTL. It
// hashes as it goes: no copy of the recipient list is kept.
func broadcastFingerprint(recipientsE164 []string, text string, ttl time.Duration) string {
	f := newFingerprinter("broadcast")
	f.str(strconv.Itoa(len(recipientsE164)))
	for _, r := range recipientsE164 {
		f.str(r)
	}
	f.str(text)
	f.dur(ttl)
	return f.sum()
}

// ClearFingerprint returns the fingerprint of cmd: its scope, reason and then (not its ClearID,
// which the key determines, nor its actor). Then enters only when it is not keep (the default),
// so a request without then has the fingerprint it had before then existed.
func ClearFingerprint(cmd RequestClear) string {
	f := newFingerprinter("clear")
	scope := "queue"
	if !cmd.Scope.IsWholeQueue() {
		scope = "broadcast/" + cmd.Scope.BroadcastID.String()
	}
	f.str(scope)
	f.str(cmd.Reason)
	if t := cmd.Then.orKeep(); t != ClearThenKeep {
		f.str("then/" + t.String())
	}
	return f.sum()
}

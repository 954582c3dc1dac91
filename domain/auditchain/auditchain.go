// Package auditchain is the tamper evidence of the audit trail (G8): the hash that chains each
// entry to the one before it, checkpoints of a chain's head signed with an Ed25519 key that the
// database never holds, and the Verifier that checks a chain read back against them.
//
// Each tenant has its own chain: entries seq 1, 2, 3, … where hash = SHA-256(prev_hash ||
// canonical entry bytes). The chain alone detects an entry altered, removed or inserted, but not
// one rewritten together with every hash after it, nor a cut tail. A Checkpoint signs (tenant,
// seq, head hash, time): a rewrite of any entry at or before a checkpoint's seq no longer ends in
// its head hash, and forging a new checkpoint needs the private key. A cut tail is detected when
// a checkpoint past the remaining head is known — stored with the entries (unless it was cut
// too) or kept outside (the webhook / integration event of each checkpoint, or one an auditor
// saved and gives to `waqueue audit verify --since`).
//
// The package is pure: no I/O, no clock, no randomness (Ed25519 signing is deterministic).
package auditchain

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Stable names of the checkpoint event. Never change them.
const (
	// StreamPrefix starts the stream of a tenant's checkpoints, "auditcp-<tenant>".
	StreamPrefix = "auditcp-"
	// TypeCheckpointSigned is the event recording one signed Checkpoint (its body is the
	// Checkpoint's JSON).
	TypeCheckpointSigned = "AuditCheckpointSigned"
)

// StreamName is the stream of tenant's checkpoints.
func StreamName(tenant string) string { return StreamPrefix + tenant }

// Link is what an audit entry's hash covers: its fields and the hash of the entry before it.
type Link struct {
	Tenant     string
	Seq        uint64
	EventID    string
	Stream     string
	Connection string
	Type       string
	Actor      string
	Reason     string
	AtUS       int64
	Details    string
	// PrevHash is the hash of entry Seq-1 ("" for the first).
	PrevHash string
}

// Hash returns hex(SHA-256(PrevHash || canonical bytes)). The canonical bytes are the JSON
// encoding of the fields in a fixed order (encoding/json writes struct fields in declaration
// order and escapes strings deterministically).
func (l Link) Hash() string {
	canon, _ := json.Marshal(struct {
		Tenant     string `json:"tenant"`
		Seq        uint64 `json:"seq"`
		EventID    string `json:"event_id"`
		Stream     string `json:"stream"`
		Connection string `json:"connection"`
		Type       string `json:"type"`
		Actor      string `json:"actor"`
		Reason     string `json:"reason"`
		AtUS       int64  `json:"at_us"`
		Details    string `json:"details"`
	}{l.Tenant, l.Seq, l.EventID, l.Stream, l.Connection, l.Type, l.Actor, l.Reason, l.AtUS, l.Details})
	h := sha256.New()
	h.Write([]byte(l.PrevHash))
	h.Write(canon)
	return hex.EncodeToString(h.Sum(nil))
}

// Checkpoint is a signed statement "tenant's audit chain had Seq entries, the last with hash
// Head, at At". Its JSON form is what GET /v1/audit/checkpoints lists, what the
// waqueue.audit.checkpoint.v1 integration event carries, and what `waqueue audit verify
// --since` takes.
type Checkpoint struct {
	TenantID string `json:"tenant_id"`
	// Seq is the number of entries covered (the head entry's seq).
	Seq uint64 `json:"seq"`
	// Head is the hash of entry Seq.
	Head string `json:"head_hash"`
	// At is when the checkpoint was signed (UTC, microseconds).
	At time.Time `json:"at"`
	// KeyID is the fingerprint of PublicKey (see KeyID).
	KeyID string `json:"key_id"`
	// PublicKey is the signer's Ed25519 public key, base64. A verifier trusts the key it was
	// given, never this field; it is here to say which key signed.
	PublicKey string `json:"public_key"`
	// Signature is the Ed25519 signature of the canonical bytes, base64.
	Signature string `json:"signature"`
}

// signed returns the canonical bytes a checkpoint's signature covers.
func (c Checkpoint) signed() []byte {
	b, _ := json.Marshal(struct {
		V      string `json:"v"`
		Tenant string `json:"tenant"`
		Seq    uint64 `json:"seq"`
		Head   string `json:"head"`
		AtUS   int64  `json:"at_us"`
		KeyID  string `json:"key_id"`
	}{"waqueue.audit.checkpoint.v1", c.TenantID, c.Seq, c.Head, c.At.UnixMicro(), c.KeyID})
	return b
}

// Sign returns the checkpoint of (tenant, seq, head, at) signed with key.
func Sign(key ed25519.PrivateKey, tenant string, seq uint64, head string, at time.Time) Checkpoint {
	pub := key.Public().(ed25519.PublicKey)
	c := Checkpoint{TenantID: tenant, Seq: seq, Head: head, At: at.UTC().Truncate(time.Microsecond), KeyID: KeyID(pub),
		PublicKey: EncodePublicKey(pub)}
	c.Signature = base64.StdEncoding.EncodeToString(ed25519.Sign(key, c.signed()))
	return c
}

// Errors of Checkpoint.Verify. Match with errors.Is.
var (
	// ErrUntrustedKey: the checkpoint names a key that is not among the trusted ones.
	ErrUntrustedKey = errors.New("auditchain: checkpoint signed by an untrusted key")
	// ErrBadSignature: the signature does not match the checkpoint's fields (forged or altered).
	ErrBadSignature = errors.New("auditchain: checkpoint signature does not verify")
)

// Verify checks c's signature against the trusted keys: the key named by c.KeyID must be one
// of them, and the signature must cover c's fields exactly. c.PublicKey is not trusted.
func (c Checkpoint) Verify(trusted ...ed25519.PublicKey) error {
	sig, err := base64.StdEncoding.DecodeString(c.Signature)
	if err != nil {
		return fmt.Errorf("%w: signature is not base64", ErrBadSignature)
	}
	for _, k := range trusted {
		if KeyID(k) != c.KeyID {
			continue
		}
		if !ed25519.Verify(k, c.signed(), sig) {
			return ErrBadSignature
		}
		return nil
	}
	return fmt.Errorf("%w: %s", ErrUntrustedKey, c.KeyID)
}

// KeyID is the fingerprint of pub: "ed25519:" and the first 16 hex digits of SHA-256(pub).
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return "ed25519:" + hex.EncodeToString(sum[:8])
}

// EncodePublicKey returns pub in base64 (the form printed at start and taken by
// ParsePublicKey).
func EncodePublicKey(pub ed25519.PublicKey) string { return base64.StdEncoding.EncodeToString(pub) }

// ParsePublicKey reads an Ed25519 public key given as base64 (32 bytes) or as a PEM "PUBLIC
// KEY" block (PKIX).
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	s = strings.TrimSpace(s)
	if block, _ := pem.Decode([]byte(s)); block != nil {
		k, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("auditchain: public key: %w", err)
		}
		pub, ok := k.(ed25519.PublicKey)
		if !ok {
			return nil, errors.New("auditchain: public key: not Ed25519")
		}
		return pub, nil
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, errors.New("auditchain: public key: want base64 of 32 bytes or a PEM PUBLIC KEY block")
	}
	return ed25519.PublicKey(b), nil
}

// ParseCheckpoint reads a checkpoint given as its JSON, or as the JSON of an integration event
// (or webhook body) whose "data" is one.
func ParseCheckpoint(b []byte) (Checkpoint, error) {
	var env struct {
		Data json.RawMessage `json:"data"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&env); err != nil {
		return Checkpoint{}, fmt.Errorf("auditchain: checkpoint: %w", err)
	}
	if len(env.Data) > 0 && env.Data[0] == '{' {
		b = env.Data
	}
	var c Checkpoint
	if err := json.Unmarshal(b, &c); err != nil {
		return Checkpoint{}, fmt.Errorf("auditchain: checkpoint: %w", err)
	}
	if c.TenantID == "" || c.Seq == 0 || c.Head == "" || c.KeyID == "" || c.Signature == "" {
		return Checkpoint{}, errors.New("auditchain: checkpoint: tenant_id, seq, head_hash, key_id and signature are required")
	}
	return c, nil
}

package apikeys

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/domain/auth"
)

// Broker tokens.
//
// Commands sent through a broker are persisted by it (NATS JetStream keeps them in its stream
// until handled), so they must not carry an API key. A service trades its key for a broker token
// over HTTPS (POST /v1/broker/tokens) and sends that instead. A token is
//
//	"wqt1." + base64url(JSON {"t": tenant, "k": key id, "e": expiry (unix seconds), "n": nonce})
//	       + "." + base64url(HMAC-SHA256(node secret, everything before the last dot))
//
// It carries no key and no key hash: read from the broker's storage it tells the key's id and
// tenant, and it authenticates nothing once expired. While valid it stands for its key: a
// command is authenticated as the key's current role, and a revoked key's tokens stop working
// at once. Expiry is judged as of when the broker stored the message (commands.Credential.At),
// so a command that waited in the queue is not lost. Signed tokens were chosen over NATS users
// per tenant because the principal (the key, its role, its revocation) stays waqueue's, audited
// like every rights change; the NATS server's per-tenant permissions (docs/operations.md) are a
// second wall, not the identity.

// TokenPrefix starts every broker token.
const TokenPrefix = "wqt1."

// Token lifetimes.
const (
	DefaultTokenTTL = 15 * time.Minute
	MaxTokenTTL     = time.Hour
	// tokenSkew tolerates clocks of nodes that disagree a little about "issued now".
	tokenSkew = time.Minute
)

// TokenSecretLen is the length of the signing secret in bytes.
const TokenSecretLen = 32

// ErrInvalidToken: the presented broker credential is not a valid token (malformed, wrongly
// signed, expired, of a revoked or unknown key, or an API key). The cases are indistinguishable
// on purpose.
var ErrInvalidToken = errors.New("apikeys: invalid broker token")

// Tokens mints and verifies broker tokens for the keys of Keys. It is safe for concurrent use.
type Tokens struct {
	keys   *Keys
	secret []byte
	now    func() time.Time
}

var _ commands.Authenticator = (*Tokens)(nil)

// NewTokens returns the token service of keys, signing with secret (at least TokenSecretLen
// bytes; every node of a deployment must share it). now is the clock (nil means UTC wall
// clock).
func NewTokens(keys *Keys, secret []byte, now func() time.Time) (*Tokens, error) {
	if keys == nil {
		return nil, errors.New("apikeys: NewTokens: nil keys")
	}
	if len(secret) < TokenSecretLen {
		return nil, fmt.Errorf("apikeys: NewTokens: the secret must have at least %d bytes", TokenSecretLen)
	}
	if now == nil {
		now = func() time.Time { return time.Now().UTC() }
	}
	return &Tokens{keys: keys, secret: bytes.Clone(secret), now: now}, nil
}

// Token is a minted broker token.
type Token struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
	TenantID  string    `json:"tenant_id"`
	KeyID     string    `json:"key_id"`
}

type tokenClaims struct {
	Tenant string `json:"t"`
	Key    string `json:"k"`
	Expiry int64  `json:"e"`
	Nonce  string `json:"n"`
}

// Mint returns a token standing for p, valid for ttl (0 means DefaultTokenTTL; at most
// MaxTokenTTL). p must be the principal of a live key (the system principal has no key).
func (t *Tokens) Mint(ctx context.Context, p auth.Principal, ttl time.Duration) (Token, error) {
	if ttl == 0 {
		ttl = DefaultTokenTTL
	}
	if ttl < 0 || ttl > MaxTokenTTL {
		return Token{}, &ValidationError{Field: "ttl", Detail: fmt.Sprintf("must be positive and at most %s", MaxTokenTTL)}
	}
	if p.IsSystem() {
		return Token{}, errors.New("apikeys: no broker token for the system principal")
	}
	key, err := t.keys.Get(ctx, p.TenantID, p.ID)
	if err != nil {
		return Token{}, err
	}
	if !key.RevokedAt.IsZero() {
		return Token{}, fmt.Errorf("%w: %s", ErrRevoked, key.ID)
	}
	if err := t.keys.Active(ctx, key.TenantID); err != nil {
		return Token{}, err
	}
	nonce := make([]byte, 12)
	if _, err := rand.Read(nonce); err != nil {
		return Token{}, fmt.Errorf("apikeys: random: %w", err)
	}
	exp := t.now().UTC().Add(ttl).Truncate(time.Second)
	body, err := json.Marshal(tokenClaims{Tenant: key.TenantID, Key: key.ID, Expiry: exp.Unix(), Nonce: hex.EncodeToString(nonce)})
	if err != nil {
		return Token{}, fmt.Errorf("apikeys: encode token: %w", err)
	}
	signed := TokenPrefix + base64.RawURLEncoding.EncodeToString(body)
	return Token{Token: signed + "." + base64.RawURLEncoding.EncodeToString(t.sign(signed)),
		ExpiresAt: exp, TenantID: key.TenantID, KeyID: key.ID}, nil
}

func (t *Tokens) sign(s string) []byte {
	m := hmac.New(sha256.New, t.secret)
	m.Write([]byte(s))
	return m.Sum(nil)
}

// AuthenticateCommand implements commands.Authenticator: the principal of the key c.Token
// stands for, with the key's current role, if the token is well signed, was valid at c.At and
// its key is live. Anything else is ErrInvalidToken.
func (t *Tokens) AuthenticateCommand(ctx context.Context, c commands.Credential) (auth.Principal, error) {
	claims, ok := t.verify(c.Token)
	if !ok || !c.At.Before(time.Unix(claims.Expiry, 0)) || c.At.Before(time.Unix(claims.Expiry, 0).Add(-MaxTokenTTL-tokenSkew)) {
		return auth.Principal{}, ErrInvalidToken
	}
	key, err := t.keys.Get(ctx, claims.Tenant, claims.Key)
	if errors.Is(err, ErrNotFound) {
		return auth.Principal{}, ErrInvalidToken
	}
	if err != nil {
		return auth.Principal{}, err
	}
	if !key.RevokedAt.IsZero() {
		return auth.Principal{}, ErrInvalidToken
	}
	// A suspended tenant's tokens are refused (a *SuspendedError, which the command processor
	// acknowledges as a refusal) until the tenant is resumed.
	if err := t.keys.Active(ctx, key.TenantID); err != nil {
		return auth.Principal{}, err
	}
	return auth.Principal{TenantID: key.TenantID, ID: key.ID, Role: key.Role}, nil
}

// verify checks the token's form and signature and returns its claims.
func (t *Tokens) verify(token string) (tokenClaims, bool) {
	if !strings.HasPrefix(token, TokenPrefix) || len(token) > 1024 {
		return tokenClaims{}, false
	}
	dot := strings.LastIndexByte(token, '.')
	if dot <= len(TokenPrefix) {
		return tokenClaims{}, false
	}
	signed, sig64 := token[:dot], token[dot+1:]
	sig, err := base64.RawURLEncoding.DecodeString(sig64)
	if err != nil || !hmac.Equal(sig, t.sign(signed)) {
		return tokenClaims{}, false
	}
	body, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(signed, TokenPrefix))
	if err != nil {
		return tokenClaims{}, false
	}
	var c tokenClaims
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil || c.Tenant == "" || c.Key == "" || c.Expiry <= 0 {
		return tokenClaims{}, false
	}
	return c, true
}

// LoadOrCreateTokenSecret reads the signing secret from path (hex, TokenSecretLen bytes or
// more), creating the file with a random secret (mode 0600, its directory 0700) if it does not
// exist. Every node of a deployment must use the same secret: copy the file, or point each
// node at one shared file.
func LoadOrCreateTokenSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		secret := make([]byte, TokenSecretLen)
		if _, err := rand.Read(secret); err != nil {
			return nil, fmt.Errorf("apikeys: random: %w", err)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("apikeys: token secret: %w", err)
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, os.ErrExist) {
			return LoadOrCreateTokenSecret(path) // another process created it meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("apikeys: token secret: %w", err)
		}
		_, werr := fmt.Fprintln(f, hex.EncodeToString(secret))
		if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
			return nil, fmt.Errorf("apikeys: token secret %s: %w", path, err)
		}
		return secret, nil
	}
	if err != nil {
		return nil, fmt.Errorf("apikeys: token secret: %w", err)
	}
	secret, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(secret) < TokenSecretLen {
		return nil, fmt.Errorf("apikeys: token secret %s: want at least %d hex-encoded bytes", path, TokenSecretLen)
	}
	return secret, nil
}

// Package auditkey keeps the Ed25519 key that signs the audit chain's checkpoints
// (domain/auditchain) in a file of its own: the database never holds it, so whoever can write
// the database cannot forge a checkpoint.
package auditkey

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// FileName is the key file's name in the data directory when no path is given.
const FileName = "audit-key.pem"

// LoadOrCreate reads the private key at path (PEM "PRIVATE KEY", PKCS #8, as written by
// `openssl genpkey -algorithm ed25519`). When the file does not exist it creates a new key there,
// readable by the owner only (0600, directory 0700), and reports created. An existing file is
// never overwritten.
func LoadOrCreate(path string) (key ed25519.PrivateKey, created bool, err error) {
	key, err = Load(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return key, false, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, false, fmt.Errorf("auditkey: %w", err)
	}
	_, key, err = ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, false, fmt.Errorf("auditkey: generate: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, false, fmt.Errorf("auditkey: encode: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) { // another process created it first: use theirs
		key, err = Load(path)
		return key, false, err
	}
	if err != nil {
		return nil, false, fmt.Errorf("auditkey: create %s: %w", path, err)
	}
	werr := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
		_ = os.Remove(path)
		return nil, false, fmt.Errorf("auditkey: write %s: %w", path, err)
	}
	return key, true, nil
}

// Load reads the private key at path; a missing file is an error matching fs.ErrNotExist.
func Load(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auditkey: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("auditkey: %s: want a PEM PRIVATE KEY block (PKCS #8 Ed25519)", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("auditkey: %s: %w", path, err)
	}
	key, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("auditkey: %s: not an Ed25519 key", path)
	}
	return key, nil
}

// PublicPEM returns key's public half as a PEM "PUBLIC KEY" block (PKIX), for verifiers.
func PublicPEM(key ed25519.PrivateKey) []byte {
	der, _ := x509.MarshalPKIXPublicKey(key.Public())
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

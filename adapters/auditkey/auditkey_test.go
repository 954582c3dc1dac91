package auditkey

import (
	"crypto/ed25519"
	"os"
	"path/filepath"
	"testing"

	"github.com/waqueue/waqueue/domain/auditchain"
)

func TestLoadOrCreateMakesAPrivateFileOnceThenReadsIt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", FileName)
	k1, created, err := LoadOrCreate(path)
	if err != nil || !created || len(k1) != ed25519.PrivateKeySize {
		t.Fatalf("first start: created %v, err %v", created, err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode = %v, %v; want 0600", st.Mode().Perm(), err)
	}
	k2, created, err := LoadOrCreate(path)
	if err != nil || created || !k1.Equal(k2) {
		t.Fatalf("second start: created %v, same key %v, err %v", created, k1.Equal(k2), err)
	}
	pub, err := auditchain.ParsePublicKey(string(PublicPEM(k1)))
	if err != nil || !pub.Equal(k1.Public()) {
		t.Fatalf("public PEM does not parse back: %v", err)
	}
}

func TestLoadRefusesGarbage(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	if err := os.WriteFile(path, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreate(path); err == nil {
		t.Fatal("a garbage key file was accepted (or overwritten)")
	}
	if b, _ := os.ReadFile(path); string(b) != "not a key" {
		t.Fatal("an existing key file was overwritten")
	}
}

package apikeys_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/waqueue/waqueue/adapters/apikeys"
	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/domain/auth"
)

func newTokens(t testing.TB, k *apikeys.Keys, now func() time.Time) *apikeys.Tokens {
	t.Helper()
	tk, err := apikeys.NewTokens(k, bytes.Repeat([]byte{1}, apikeys.TokenSecretLen), now)
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

// TestTokens: a token stands for its key while valid as of the broker's storage time; a token
// signed with another secret, of a revoked key, or presented after expiry is refused, and so is
// an API key; tokens carry no key material.
func TestTokens(t *testing.T) {
	k, _, _ := open(t)
	ctx := t.Context()
	c, err := k.Create(ctx, "t1", auth.RoleSender, "svc", "admin")
	if err != nil {
		t.Fatal(err)
	}
	p := auth.Principal{TenantID: "t1", ID: c.ID, Role: c.Role}
	tk := newTokens(t, k, func() time.Time { return fixed })
	tok, err := tk.Mint(ctx, p, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !tok.ExpiresAt.Equal(fixed.Add(apikeys.DefaultTokenTTL)) || strings.Contains(tok.Token, c.Secret) || strings.Contains(tok.Token, apikeys.Hash(c.Secret)) {
		t.Fatalf("token %+v", tok)
	}
	got, err := tk.AuthenticateCommand(ctx, commands.Credential{Token: tok.Token, At: fixed.Add(time.Minute)})
	if err != nil || got != p {
		t.Fatalf("principal %+v, %v", got, err)
	}
	other, err := apikeys.NewTokens(k, bytes.Repeat([]byte{2}, apikeys.TokenSecretLen), nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, cred := range map[string]commands.Credential{
		"expired":        {Token: tok.Token, At: tok.ExpiresAt},
		"api key":        {Token: c.Secret, At: fixed},
		"empty":          {At: fixed},
		"truncated":      {Token: tok.Token[:len(tok.Token)-1], At: fixed},
		"no signature":   {Token: tok.Token[:strings.LastIndexByte(tok.Token, '.')], At: fixed},
		"future minting": {Token: tok.Token, At: fixed.Add(-2 * apikeys.MaxTokenTTL)},
	} {
		if _, err := tk.AuthenticateCommand(ctx, cred); !errors.Is(err, apikeys.ErrInvalidToken) {
			t.Errorf("%s: %v, want ErrInvalidToken", name, err)
		}
	}
	if _, err := other.AuthenticateCommand(ctx, commands.Credential{Token: tok.Token, At: fixed}); !errors.Is(err, apikeys.ErrInvalidToken) {
		t.Errorf("another secret's token: %v", err)
	}
	if _, err := tk.Mint(ctx, p, 2*apikeys.MaxTokenTTL); !errors.Is(err, apikeys.ErrInvalid) {
		t.Errorf("too long a ttl: %v", err)
	}
	if _, err := tk.Mint(ctx, auth.SystemPrincipal("t1", "system"), 0); err == nil {
		t.Error("a token for the system principal")
	}
	if _, err := tk.Mint(ctx, auth.Principal{TenantID: "t2", ID: c.ID, Role: auth.RoleAdmin}, 0); !errors.Is(err, apikeys.ErrNotFound) {
		t.Errorf("a token for another tenant's key: %v", err)
	}
	if err := k.Revoke(ctx, "t1", c.ID, "admin", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := tk.AuthenticateCommand(ctx, commands.Credential{Token: tok.Token, At: fixed}); !errors.Is(err, apikeys.ErrInvalidToken) {
		t.Errorf("revoked key's token: %v", err)
	}
}

// FuzzTokenAuthenticate: no input panics, and nothing but a minted token authenticates.
func FuzzTokenAuthenticate(f *testing.F) {
	f.Add("wqt1.e30.AAAA")
	f.Add("wqt1..")
	f.Add("wq_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	f.Add("wqt1.eyJ0IjoidDEiLCJrIjoia2V5XzEiLCJlIjo5OTk5OTk5OTk5LCJuIjoiMDAifQ.c2ln")
	k, _, _ := open(f)
	tk := newTokens(f, k, nil)
	f.Fuzz(func(t *testing.T, token string) {
		if _, err := tk.AuthenticateCommand(t.Context(), commands.Credential{Token: token, At: fixed}); err == nil {
			t.Fatalf("%q authenticates", token)
		}
	})
}

package apikeys

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/waqueue/waqueue/domain/auth"
)

// DefaultTenant is the tenant Bootstrap creates: the platform tenant, whose admin keys are the
// platform operator's.
const DefaultTenant = "default"

// BootstrapActor is the actor recorded for the first admin key.
const BootstrapActor = "bootstrap"

// AdminKeyFile is the name of the file, under the data directory, that Bootstrap writes the
// first admin key to (mode 0600).
const AdminKeyFile = "admin.key"

// Bootstrap prepares a fresh installation: it catches the key table up with the log (Sync),
// records the platform tenant DefaultTenant (TenantCreated) unless it is known and, if no key
// exists at all (in any tenant), creates an admin key of tenant DefaultTenant — the platform
// operator's key (an admin key of the platform tenant manages the tenants, see httpapi) —
// writes its secret to dataDir/AdminKeyFile with mode 0600 (dataDir is created 0700 if
// missing) and prints it once to out. It returns the key created, or nil when keys exist
// already. The file is written before the key is printed; a write failure leaves a key that
// nobody knows (harmless: it can be revoked) and returns the error.
func Bootstrap(ctx context.Context, k *Keys, dataDir string, out io.Writer) (*Created, error) {
	if err := k.Sync(ctx); err != nil {
		return nil, err
	}
	// The platform tenant is a tenant like any other (listed, audited); an installation older
	// than tenants gets its TenantCreated now.
	if err := k.EnsureTenant(ctx, DefaultTenant, DefaultTenant, BootstrapActor); err != nil {
		return nil, err
	}
	n, err := k.Count(ctx)
	if err != nil {
		return nil, err
	}
	if n > 0 {
		return nil, nil
	}
	if dataDir == "" {
		return nil, errors.New("apikeys: bootstrap: data directory required")
	}
	created, err := k.Create(ctx, DefaultTenant, auth.RoleAdmin, "bootstrap admin key", BootstrapActor)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("apikeys: bootstrap: %w", err)
	}
	path := filepath.Join(dataDir, AdminKeyFile)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("apikeys: bootstrap: %w", err)
	}
	_, werr := fmt.Fprintln(f, created.Secret)
	if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
		return nil, fmt.Errorf("apikeys: bootstrap: write %s: %w", path, err)
	}
	if out != nil {
		fmt.Fprintf(out, "waqueue: created tenant %q and its admin API key %s (id %s); it is shown once and saved to %s\n",
			DefaultTenant, created.Secret, created.ID, path)
	}
	return &created, nil
}

package apikeys_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/waqueue/waqueue/adapters/apikeys"
	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/internal/testwait"
)

// TestConcurrentRoleChangesKeepTheChain races role changes of one key on three instances —
// two sharing a read-model database, one with its own — and a revocation midway. Each
// recorded APIKeyRoleChanged must name the role the key had just before it in the tenant's
// stream (the audit trail reads as a chain), and no change may follow the revocation: each
// decision is made on the stream's current revision, never on a stale read.
func TestConcurrentRoleChangesKeepTheChain(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testwait.AtLeast(3*time.Minute))
	defer cancel()
	pg := openPG(t)
	store := pg.Store
	// Two nodes sharing a read-model database, one with its own.
	nodes := []*apikeys.Keys{newNode(t, store, pg.DB), newNode(t, store, pg.DB), newNode(t, store, openOwnReadModels(t))}
	key, err := nodes[0].Create(ctx, "t1", auth.RoleSender, "contended", "admin")
	if err != nil {
		t.Fatal(err)
	}

	roles := []auth.Role{auth.RoleOperator, auth.RoleAuditor, auth.RoleAnalyst, auth.RoleSender}
	const perNode = 30
	var wg sync.WaitGroup
	for n, k := range nodes {
		wg.Go(func() {
			for i := range perNode {
				if n == 0 && i == perNode/2 {
					if err := k.Revoke(ctx, "t1", key.ID, "admin", "rotated"); err != nil && !errors.Is(err, apikeys.ErrRevoked) {
						t.Errorf("revoke: %v", err)
					}
				}
				_, err := k.ChangeRole(ctx, "t1", key.ID, roles[(n+i)%len(roles)], "admin")
				if err != nil && !errors.Is(err, apikeys.ErrRevoked) {
					t.Errorf("node %d: change role: %v", n, err)
				}
			}
		})
	}
	wg.Wait()

	evs, err := store.ReadStream(ctx, auth.TenantStream("t1"), eventstore.Forwards, 0, 10_000)
	if err != nil {
		t.Fatal(err)
	}
	var (
		role    auth.Role
		revoked bool
		changes int
	)
	for _, e := range evs {
		ev, err := auth.DecodeKeyEvent(e.Type, e.Data)
		if err != nil {
			continue // a tenant event
		}
		switch v := ev.(type) {
		case auth.APIKeyCreated:
			role = v.Role
		case auth.APIKeyRoleChanged:
			changes++
			if revoked {
				t.Errorf("revision %d: role changed to %s after the key was revoked", e.Revision, v.Role)
			}
			if v.PreviousRole != role {
				t.Errorf("revision %d: role change %s → %s, but the key's role was %s", e.Revision, v.PreviousRole, v.Role, role)
			}
			if v.Role == v.PreviousRole {
				t.Errorf("revision %d: a role change to the role the key had (%s)", e.Revision, v.Role)
			}
			role = v.Role
		case auth.APIKeyRevoked:
			if revoked {
				t.Errorf("revision %d: the key revoked twice", e.Revision)
			}
			revoked = true
		}
	}
	if !revoked || changes == 0 {
		t.Fatalf("the race exercised too little: revoked %v, %d role changes", revoked, changes)
	}
	t.Logf("%d role changes recorded before the revocation", changes)
}

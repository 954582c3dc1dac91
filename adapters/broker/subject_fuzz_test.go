package broker

import (
	"strings"
	"testing"

	"github.com/waqueue/waqueue/domain/connection"
)

// FuzzTenantOfSubject: the tenant read back from a subject is the one it was made for (every
// valid tenant id maps to one token and back), and parsing any subject never panics nor yields
// a tenant from a subject outside the tenant layout.
func FuzzTenantOfSubject(f *testing.F) {
	for _, s := range []string{"tenant-a", "acme.eu", "a", "...", "x~y", "waqueue.a.commands.X", "waqueue-topics.x", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if connection.ValidateID("tenant_id", s) == nil {
			for _, subj := range []string{CommandsPrefix(s) + "EnqueueMessage", EventsPrefix(s) + "message.status_changed.v1"} {
				got, ok := tenantOfSubject(subj)
				if !ok || got != s {
					t.Fatalf("tenant of %q = %q, %v; want %q", subj, got, ok, s)
				}
			}
		}
		if tenant, ok := tenantOfSubject(s); ok {
			if !strings.HasPrefix(s, SubjectRoot+".") || tenant == "" {
				t.Fatalf("subject %q yields tenant %q", s, tenant)
			}
		}
	})
}

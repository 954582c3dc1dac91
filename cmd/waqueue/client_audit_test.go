package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/waqueue/waqueue/adapters/httpapi/apitest"
	"github.com/waqueue/waqueue/domain/auditchain"
	"github.com/waqueue/waqueue/projections"
)

// waitCheckpointAtHead waits until the tenant's newest checkpoint covers its newest audit entry
// and returns it (the checkpointer runs in the background after each audit batch).
func waitCheckpointAtHead(t *testing.T, srv *apitest.Server) auditchain.Checkpoint {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(3 * time.Minute) // a safety net only
	for {
		if err := srv.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		var head int64
		if err := srv.DB.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) FROM audit_entries WHERE tenant_id = $1`, srv.Tenant).Scan(&head); err != nil {
			t.Fatal(err)
		}
		page, err := srv.Audit.Checkpoints(ctx, srv.DB, srv.Tenant, "", 1)
		if err != nil {
			t.Fatal(err)
		}
		if head > 0 && len(page.Checkpoints) == 1 && page.Checkpoints[0].Seq == uint64(head) {
			return page.Checkpoints[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no checkpoint at the audit head %d (newest: %+v)", head, page.Checkpoints)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition
	}
}

func TestAuditVerifySinceCheckpoint(t *testing.T) {
	dir := t.TempDir()
	srv := apitest.Start(t, apitest.Options{Dir: dir, AuditCheckpointEvery: 1})
	mustCLI(t, srv, dir, "connections", "register", "--phone", "+491701234567", "--id", "shop-1")
	mustCLI(t, srv, dir, "keys", "create", "--role", "auditor")
	mustCLI(t, srv, dir, "queue", "clear", "shop-1", "--reason", "ban & <appeal>", "--yes")
	cp := waitCheckpointAtHead(t, srv)
	pub := auditchain.EncodePublicKey(srv.Node.AuditCheckpoints.PublicKey())

	// What the CLI lists is what the server stored, and it verifies with the server's key.
	listed, err := auditchain.ParseCheckpoint([]byte(mustCLI(t, srv, dir, "audit", "checkpoints")))
	if err != nil || listed.Signature != cp.Signature {
		t.Fatalf("audit checkpoints printed %+v (%v), want %+v", listed, err, cp)
	}
	cpJSON, _ := json.Marshal(cp)
	out := mustCLI(t, srv, dir, "audit", "verify", "--since", string(cpJSON), "--public-key", pub)
	if !strings.Contains(out, "audit chain intact since checkpoint") || !strings.Contains(out, "0 entries after it") {
		t.Fatalf("verify --since printed %q", out)
	}
	fields := fmt.Sprintf("tenant_id=%s,seq=%d,head_hash=%s,at=%s,key_id=%s,signature=%s", cp.TenantID, cp.Seq, cp.Head,
		cp.At.Format(time.RFC3339Nano), cp.KeyID, cp.Signature)
	mustCLI(t, srv, dir, "audit", "verify", "--since", fields, "--public-key", pub)

	// Refused: no trusted key, another key, an altered checkpoint.
	if _, _, err := cli(t, srv, dir, "", "audit", "verify", "--since", string(cpJSON)); err == nil || !strings.Contains(err.Error(), "--public-key") {
		t.Errorf("verify --since without a key: %v", err)
	}
	other := auditchain.EncodePublicKey(make([]byte, 32))
	if _, _, err := cli(t, srv, dir, "", "audit", "verify", "--since", string(cpJSON), "--public-key", other); err == nil {
		t.Error("a checkpoint verified with another key")
	}
	altered := strings.Replace(fields, fmt.Sprintf("seq=%d", cp.Seq), fmt.Sprintf("seq=%d", cp.Seq-1), 1)
	if _, _, err := cli(t, srv, dir, "", "audit", "verify", "--since", altered, "--public-key", pub); err == nil {
		t.Error("an altered checkpoint verified")
	}

	ctx := context.Background()
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := srv.DB.ExecContext(ctx, q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	exec(`CREATE TABLE audit_entries_bak AS SELECT * FROM audit_entries`)
	exec(`CREATE TABLE audit_checkpoints_bak AS SELECT * FROM audit_checkpoints`)
	restore := func() {
		exec(`DELETE FROM audit_entries`)
		exec(`INSERT INTO audit_entries SELECT * FROM audit_entries_bak`)
		exec(`DELETE FROM audit_checkpoints`)
		exec(`INSERT INTO audit_checkpoints SELECT * FROM audit_checkpoints_bak`)
	}
	wantTampered := func(what, kind string) {
		t.Helper()
		_, _, err := cli(t, srv, dir, "", "audit", "verify", "--since", string(cpJSON), "--public-key", pub)
		if err == nil || !strings.Contains(err.Error(), "("+kind+" ") {
			t.Errorf("%s: verify --since: %v, want %s", what, err, kind)
		}
	}

	// A recomputed chain: entry 2 edited, every hash from it on recomputed. The server's
	// unkeyed verification still says intact; the anchored one does not.
	page, err := srv.Audit.Entries(ctx, srv.DB, srv.Tenant, projectionsFilterAll())
	if err != nil {
		t.Fatal(err)
	}
	prev := ""
	for _, en := range page.Entries {
		if en.Seq >= 2 {
			if en.Seq == 2 {
				en.Actor = "mallory"
			}
			en.PrevHash = prev
			en.Hash = en.Link().Hash()
			exec(`UPDATE audit_entries SET actor = $3, prev_hash = $4, hash = $5 WHERE tenant_id = $1 AND seq = $2`,
				srv.Tenant, int64(en.Seq), en.Actor, en.PrevHash, en.Hash)
		}
		prev = en.Hash
	}
	if out := mustCLI(t, srv, dir, "audit", "verify"); !strings.Contains(out, "intact") {
		t.Fatalf("unkeyed verify of a consistent rewrite: %q", out)
	}
	wantTampered("recomputed chain", auditchain.ProblemRewritten)
	restore()

	// The newest entry and its checkpoint cut: detected against the checkpoint kept outside.
	exec(`DELETE FROM audit_entries WHERE tenant_id = $1 AND seq = $2`, srv.Tenant, int64(cp.Seq))
	exec(`DELETE FROM audit_checkpoints WHERE tenant_id = $1 AND seq = $2`, srv.Tenant, int64(cp.Seq))
	wantTampered("cut tail", auditchain.ProblemTruncated)
	restore()
	mustCLI(t, srv, dir, "audit", "verify", "--since", string(cpJSON), "--public-key", pub)
}

func projectionsFilterAll() projections.AuditFilter { return projections.AuditFilter{Limit: 1000} }

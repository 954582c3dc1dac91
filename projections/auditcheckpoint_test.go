package projections_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/domain/auditchain"
	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/projections"
	"github.com/waqueue/waqueue/projections/clearkit"
)

// fakeClock is the checkpointer's clock: tests move it, nothing waits.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// testKey is a fixed Ed25519 key (seeded: the test is deterministic).
func testKey(seed byte) ed25519.PrivateKey {
	s := make([]byte, ed25519.SeedSize)
	for i := range s {
		s[i] = seed
	}
	return ed25519.NewKeyFromSeed(s)
}

func pub(k ed25519.PrivateKey) ed25519.PublicKey { return k.Public().(ed25519.PublicKey) }

// auditHistory records 6 audited events of tenantA's connA (and one of tenantB's).
func auditHistory(t *testing.T, e *env) {
	t.Helper()
	ctx := context.Background()
	s, err := clearkit.Register(ctx, e.store, tenantA, connA, "+491701234567", at(0))
	if err != nil {
		t.Fatal(err)
	}
	steps := []func(c *connection.Connection) ([]connection.Event, error){
		func(c *connection.Connection) ([]connection.Event, error) {
			return c.Pair(connection.PairSession{Actor: "alice"}, at(1))
		},
		func(c *connection.Connection) ([]connection.Event, error) {
			return c.Ban(connection.BanConnection{Kind: connection.BanPermanent, ReasonCode: "406", Actor: "whatsapp"}, at(2))
		},
		func(c *connection.Connection) ([]connection.Event, error) {
			return c.LiftBan(connection.LiftBan{Reason: "appeal", Actor: "bob"}, at(3))
		},
		func(c *connection.Connection) ([]connection.Event, error) {
			return c.Resume(connection.ResumeQueue{Note: "ok", Actor: "bob"}, at(4))
		},
	}
	for _, step := range steps {
		if _, err := s.Do(ctx, "test", step); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := clearkit.Register(ctx, e.store, tenantB, "conn-b", "+491709999999", at(0)); err != nil {
		t.Fatal(err)
	}
}

// appendKeyEvent records one more audited event (a rights change) for tenant.
func appendKeyEvent(t *testing.T, e *env, tenant, keyID string) {
	t.Helper()
	typ, body, err := auth.EncodeKeyEvent(auth.APIKeyCreated{KeyID: keyID, TenantID: tenant, Role: auth.RoleAdmin,
		Label: "ops", KeyHash: "h", CreatedBy: "root", CreatedAt: at(5)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.Append(context.Background(), auth.TenantStream(tenant), eventstore.Any,
		eventstore.EventData{ID: uuid.New(), Type: typ, Data: body}); err != nil {
		t.Fatal(err)
	}
}

func mustExec(t *testing.T, e *env, q string, args ...any) {
	t.Helper()
	if _, err := e.db.ExecContext(context.Background(), q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// TestAuditCheckpointsDetectTampering is G8: signed checkpoints detect an edited entry, a
// recomputed chain, newest entries deleted, a middle entry deleted and forged checkpoints; a
// clean chain verifies. Checkpoints are made by count and, with an injected clock, by time.
func TestAuditCheckpointsDetectTampering(t *testing.T) {
	eachEngine(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		auditHistory(t, e)
		audit := projections.NewAudit()
		clock := &fakeClock{now: storeClock().Add(time.Minute)}
		key := testKey(7)
		cpr, err := projections.NewAuditCheckpointer(projections.AuditCheckpointerConfig{DB: e.db, Store: e.store, Key: key,
			Every: 3, Interval: time.Hour, Now: clock.Now, Logger: quietLogger})
		if err != nil {
			t.Fatal(err)
		}
		r := startRunner(t, e, audit)
		r.waitFor(t, e, audit)

		// Count trigger: 6 entries ≥ 3 → tenant A's head is signed; tenant B's 1 entry is not due.
		cps, err := cpr.Tick(ctx)
		if err != nil || len(cps) != 1 || cps[0].TenantID != tenantA || cps[0].Seq != 6 {
			t.Fatalf("first tick = %+v, %v; want one checkpoint of %s at 6", cps, err, tenantA)
		}
		cp6 := cps[0]
		if again, err := cpr.Tick(ctx); err != nil || len(again) != 0 {
			t.Fatalf("tick with nothing new = %+v, %v", again, err)
		}
		// Time trigger: one more entry is not due by count; it is once it is an hour old.
		appendKeyEvent(t, e, tenantA, "key-1")
		r.waitFor(t, e, audit)
		if cps, err := cpr.Tick(ctx); err != nil || len(cps) != 0 {
			t.Fatalf("tick a minute after the entry = %+v, %v; want none", cps, err)
		}
		clock.Add(time.Hour)
		cps, err = cpr.Tick(ctx)
		if err != nil || len(cps) != 2 {
			t.Fatalf("tick an hour later = %+v, %v; want tenant A at 7 and tenant B at 1", cps, err)
		}
		var cp7, cpB auditchain.Checkpoint
		for _, c := range cps {
			if c.TenantID == tenantA {
				cp7 = c
			} else {
				cpB = c
			}
		}
		if cp7.Seq != 7 || cpB.TenantID != tenantB || cpB.Seq != 1 || !cp7.At.Equal(clock.Now().Truncate(time.Microsecond)) {
			t.Fatalf("time-triggered checkpoints = %+v", cps)
		}
		r.waitFor(t, e, audit)

		// The read model lists a tenant's own checkpoints only, newest first.
		page, err := audit.Checkpoints(ctx, e.db, tenantA, "", 0)
		if err != nil || len(page.Checkpoints) != 2 || page.Checkpoints[0].Seq != 7 || page.Checkpoints[1].Seq != 6 ||
			page.Checkpoints[0].Signature != cp7.Signature {
			t.Fatalf("checkpoints of A = %+v, %v", page.Checkpoints, err)
		}
		if err := page.Checkpoints[0].Verify(pub(key)); err != nil {
			t.Fatalf("stored checkpoint does not verify: %v", err)
		}
		if pb, _ := audit.Checkpoints(ctx, e.db, tenantB, "", 0); len(pb.Checkpoints) != 1 || pb.Checkpoints[0].TenantID != tenantB {
			t.Fatalf("checkpoints of B = %+v", pb.Checkpoints)
		}
		if _, err := audit.VerifySince(ctx, e.db, tenantB, cp7, pub(key)); !errors.Is(err, auditchain.ErrCheckpointTenant) {
			t.Fatalf("A's checkpoint against B's chain: %v", err)
		}
		r.stop()

		verify := func(since auditchain.Checkpoint) auditchain.Report {
			t.Helper()
			rep, err := audit.VerifySince(ctx, e.db, tenantA, since, pub(key))
			if err != nil {
				t.Fatal(err)
			}
			return rep
		}
		expect := func(what string, since auditchain.Checkpoint, kind string, seq uint64) {
			t.Helper()
			rep := verify(since)
			if rep.OK || rep.Problem == nil || rep.Problem.Kind != kind || rep.Problem.Seq != seq {
				t.Errorf("%s: report = %+v (problem %+v), want %s at %d", what, rep, rep.Problem, kind, seq)
			}
		}
		// A clean chain verifies, from either checkpoint.
		for _, since := range []auditchain.Checkpoint{cp6, cp7} {
			if rep := verify(since); !rep.OK || rep.Checked != 7 || rep.Latest.Seq != 7 || rep.Uncovered != 0 {
				t.Fatalf("clean chain since %d = %+v (problem %+v)", since.Seq, rep, rep.Problem)
			}
		}

		mustExec(t, e, `CREATE TABLE audit_entries_bak AS SELECT * FROM audit_entries`)
		mustExec(t, e, `CREATE TABLE audit_checkpoints_bak AS SELECT * FROM audit_checkpoints`)
		restore := func() {
			t.Helper()
			mustExec(t, e, `DELETE FROM audit_entries`)
			mustExec(t, e, `INSERT INTO audit_entries SELECT * FROM audit_entries_bak`)
			mustExec(t, e, `DELETE FROM audit_checkpoints`)
			mustExec(t, e, `INSERT INTO audit_checkpoints SELECT * FROM audit_checkpoints_bak`)
			if rep := verify(cp6); !rep.OK {
				t.Fatalf("after restore: %+v", rep.Problem)
			}
		}

		// An edited entry.
		mustExec(t, e, `UPDATE audit_entries SET actor = 'mallory' WHERE tenant_id = $1 AND seq = 4`, tenantA)
		expect("edited entry", cp6, auditchain.ProblemEdited, 4)
		restore()

		// A recomputed chain: entry 4 edited and every hash from it on recomputed. The unkeyed
		// chain verifies; the signed heads do not.
		rewrite(t, e, audit, 4)
		if v, err := audit.Verify(ctx, e.db, tenantA); err != nil || !v.OK {
			t.Fatalf("unkeyed verify of the recomputed chain = %+v, %v (the rewrite is not consistent)", v, err)
		}
		expect("recomputed chain", cp6, auditchain.ProblemRewritten, 6)
		expect("recomputed chain (since 7)", cp7, auditchain.ProblemRewritten, 7)
		restore()

		// Newest entry deleted: its stored checkpoint shows the cut.
		mustExec(t, e, `DELETE FROM audit_entries WHERE tenant_id = $1 AND seq = 7`, tenantA)
		expect("newest entry deleted", cp6, auditchain.ProblemTruncated, 7)
		// Newest entries and their checkpoints deleted: detected against a checkpoint kept
		// outside that covers them (cp7); not against an older one (documented).
		mustExec(t, e, `DELETE FROM audit_entries WHERE tenant_id = $1 AND seq >= 6`, tenantA)
		mustExec(t, e, `DELETE FROM audit_checkpoints WHERE tenant_id = $1 AND seq >= 6`, tenantA)
		expect("tail and its checkpoints deleted", cp7, auditchain.ProblemTruncated, 6)
		expect("tail and its checkpoints deleted (since 6)", cp6, auditchain.ProblemTruncated, 6)
		restore()
		mustExec(t, e, `DELETE FROM audit_entries WHERE tenant_id = $1 AND seq = 7`, tenantA)
		mustExec(t, e, `DELETE FROM audit_checkpoints WHERE tenant_id = $1 AND seq = 7`, tenantA)
		if rep := verify(cp6); !rep.OK {
			t.Errorf("a cut past every known checkpoint was reported (%+v): the docs say it is not detectable", rep.Problem)
		}
		restore()

		// A middle entry deleted.
		mustExec(t, e, `DELETE FROM audit_entries WHERE tenant_id = $1 AND seq = 2`, tenantA)
		expect("middle entry deleted", cp6, auditchain.ProblemMissing, 2)
		restore()

		// Forged checkpoints: given with a wrong key, given with altered fields, stored and
		// altered in the database, stored and signed by another key.
		other := testKey(9)
		forged := auditchain.Sign(other, tenantA, 7, cp7.Head, cp7.At)
		if _, err := audit.VerifySince(ctx, e.db, tenantA, forged, pub(key)); !errors.Is(err, auditchain.ErrUntrustedKey) {
			t.Errorf("checkpoint signed by another key: %v", err)
		}
		altered := cp7
		altered.Seq = 5
		if _, err := audit.VerifySince(ctx, e.db, tenantA, altered, pub(key)); !errors.Is(err, auditchain.ErrBadSignature) {
			t.Errorf("checkpoint with an altered seq: %v", err)
		}
		altered = cp7
		altered.KeyID = auditchain.KeyID(pub(other))
		if _, err := audit.VerifySince(ctx, e.db, tenantA, altered, pub(key), pub(other)); !errors.Is(err, auditchain.ErrBadSignature) {
			t.Errorf("checkpoint with an altered key id: %v", err)
		}
		rewrite(t, e, audit, 7)
		mustExec(t, e, `UPDATE audit_checkpoints SET head_hash = (SELECT hash FROM audit_entries WHERE tenant_id = $1 AND seq = 7)
WHERE tenant_id = $1 AND seq = 7`, tenantA)
		expect("stored checkpoint altered to a rewritten head", cp6, auditchain.ProblemForgedCheckpoint, 7)
		restore()
		f8 := auditchain.Sign(other, tenantA, 8, "00", cp7.At)
		mustExec(t, e, `INSERT INTO audit_checkpoints (tenant_id, seq, head_hash, at_us, key_id, public_key, signature)
VALUES ($1, 8, $2, 0, $3, $4, $5)`, tenantA, f8.Head, f8.KeyID, f8.PublicKey, f8.Signature)
		expect("stored checkpoint signed by another key", cp6, auditchain.ProblemForgedCheckpoint, 8)
		restore()

		// The checkpointer does not sign a chain tampered with since its last checkpoint.
		mustExec(t, e, `UPDATE audit_entries SET actor = 'mallory' WHERE tenant_id = $1 AND seq = 7`, tenantA)
		mustExec(t, e, `DELETE FROM audit_checkpoints WHERE tenant_id = $1`, tenantA)
		appendKeyEvent(t, e, tenantA, "key-2")
		r2 := startRunner(t, e, audit)
		r2.waitFor(t, e, audit)
		clock.Add(2 * time.Hour)
		if cps, err := cpr.Tick(ctx); err == nil || len(cps) != 0 {
			t.Errorf("tick over a tampered chain = %+v, %v; want no checkpoint and an error", cps, err)
		}
	})
}

// rewrite changes entry from's actor and recomputes its hash and every one after it: what an
// attacker with write access to the database but not the key can do.
func rewrite(t *testing.T, e *env, audit *projections.Audit, from uint64) {
	t.Helper()
	ctx := context.Background()
	page, err := audit.Entries(ctx, e.db, tenantA, projections.AuditFilter{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	prev := ""
	for _, en := range page.Entries {
		if en.Seq >= from {
			if en.Seq == from {
				en.Actor = "mallory"
			}
			en.PrevHash = prev
			en.Hash = en.Link().Hash()
			mustExec(t, e, `UPDATE audit_entries SET actor = $3, prev_hash = $4, hash = $5 WHERE tenant_id = $1 AND seq = $2`,
				tenantA, int64(en.Seq), en.Actor, en.PrevHash, en.Hash)
		}
		prev = en.Hash
	}
}

// TestAuditCheckpointersRace is two nodes' checkpointers signing the same heads at once: the
// stream's expected revision lets exactly one checkpoint per head through.
func TestAuditCheckpointersRace(t *testing.T) {
	eachEngine(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		auditHistory(t, e)
		audit := projections.NewAudit()
		r := startRunner(t, e, audit)
		r.waitFor(t, e, audit)
		var nodes []*projections.AuditCheckpointer
		for range 2 {
			c, err := projections.NewAuditCheckpointer(projections.AuditCheckpointerConfig{DB: e.db, Store: e.store, Key: testKey(7),
				Every: 1, Now: storeClock, Logger: quietLogger})
			if err != nil {
				t.Fatal(err)
			}
			nodes = append(nodes, c)
		}
		for round := range 3 {
			if round > 0 {
				appendKeyEvent(t, e, tenantA, uuid.NewString())
				r.waitFor(t, e, audit)
			}
			start := make(chan struct{})
			var wg sync.WaitGroup
			signed := make([][]auditchain.Checkpoint, len(nodes))
			for i, c := range nodes {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					var err error
					if signed[i], err = c.Tick(ctx); err != nil {
						t.Errorf("node %d: %v", i, err)
					}
				}()
			}
			close(start)
			wg.Wait()
			// Both may sign the same head (the same deterministic event id); the stream holds one.
			evs, err := e.store.ReadStream(ctx, auditchain.StreamName(tenantA), eventstore.Forwards, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			if len(evs) != round+1 {
				t.Fatalf("round %d: %d checkpoint events of %s, want %d (signed %+v)", round, len(evs), tenantA, round+1, signed)
			}
			seen := map[uint64]bool{}
			for _, ev := range evs {
				var c auditchain.Checkpoint
				if err := json.Unmarshal(ev.Data, &c); err != nil {
					t.Fatal(err)
				}
				if seen[c.Seq] {
					t.Fatalf("two checkpoints at seq %d", c.Seq)
				}
				seen[c.Seq] = true
			}
		}
	})
}

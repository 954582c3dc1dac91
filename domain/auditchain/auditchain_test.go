package auditchain_test

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/waqueue/waqueue/domain/auditchain"
)

func key(seed byte) ed25519.PrivateKey {
	s := make([]byte, ed25519.SeedSize)
	for i := range s {
		s[i] = seed
	}
	return ed25519.NewKeyFromSeed(s)
}

func pub(k ed25519.PrivateKey) ed25519.PublicKey { return k.Public().(ed25519.PublicKey) }

// chain returns n linked entries of tenant t.
func chain(t string, n int) ([]auditchain.Link, []string) {
	var links []auditchain.Link
	var hashes []string
	prev := ""
	for i := 1; i <= n; i++ {
		l := auditchain.Link{Tenant: t, Seq: uint64(i), EventID: fmt.Sprint("e", i), Stream: "conn-1", Type: "QueueHeld",
			Actor: "op", AtUS: int64(i), Details: `{"n":` + fmt.Sprint(i) + `}`, PrevHash: prev}
		prev = l.Hash()
		links, hashes = append(links, l), append(hashes, prev)
	}
	return links, hashes
}

var at = time.Date(2026, 12, 1, 10, 0, 0, 123456789, time.UTC)

func TestCheckpointSignatureCoversEveryField(t *testing.T) {
	k := key(1)
	c := auditchain.Sign(k, "t1", 5, "abc", at)
	if err := c.Verify(pub(k)); err != nil {
		t.Fatal(err)
	}
	if !c.At.Equal(at.Truncate(time.Microsecond)) {
		t.Errorf("At = %v, want microseconds", c.At)
	}
	// Through JSON (the API, the webhook) it still verifies.
	b, _ := json.Marshal(c)
	back, err := auditchain.ParseCheckpoint(b)
	if err != nil || back.Verify(pub(k)) != nil {
		t.Fatalf("round trip: %+v, %v", back, err)
	}
	env, _ := json.Marshal(map[string]any{"id": "x", "type": "waqueue.audit.checkpoint.v1", "data": json.RawMessage(b)})
	if fromEvent, err := auditchain.ParseCheckpoint(env); err != nil || fromEvent.Signature != c.Signature {
		t.Fatalf("from an integration event: %+v, %v", fromEvent, err)
	}
	for name, alter := range map[string]func(*auditchain.Checkpoint){
		"tenant": func(c *auditchain.Checkpoint) { c.TenantID = "t2" },
		"seq":    func(c *auditchain.Checkpoint) { c.Seq++ },
		"head":   func(c *auditchain.Checkpoint) { c.Head = "abd" },
		"time":   func(c *auditchain.Checkpoint) { c.At = c.At.Add(time.Microsecond) },
	} {
		a := c
		alter(&a)
		if err := a.Verify(pub(k)); !errors.Is(err, auditchain.ErrBadSignature) {
			t.Errorf("altered %s: %v, want ErrBadSignature", name, err)
		}
	}
	if err := c.Verify(pub(key(2))); !errors.Is(err, auditchain.ErrUntrustedKey) {
		t.Errorf("other key: %v, want ErrUntrustedKey", err)
	}
	if err := c.Verify(pub(key(2)), pub(k)); err != nil {
		t.Errorf("rotated keys: %v", err)
	}
	if _, err := auditchain.ParseCheckpoint([]byte(`{"seq":1}`)); err == nil {
		t.Error("an incomplete checkpoint parsed")
	}
}

func TestVerifier(t *testing.T) {
	k := key(1)
	links, hashes := chain("t1", 6)
	cp3 := auditchain.Sign(k, "t1", 3, hashes[2], at)
	cp6 := auditchain.Sign(k, "t1", 6, hashes[5], at)
	run := func(since auditchain.Checkpoint, stored []auditchain.Checkpoint, links []auditchain.Link, hashes []string) auditchain.Report {
		t.Helper()
		v, err := auditchain.NewVerifier(since, pub(k))
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range stored {
			v.Stored(c)
		}
		for i := range links {
			v.Entry(links[i], hashes[i])
		}
		return v.Finish()
	}
	if r := run(cp3, []auditchain.Checkpoint{cp3, cp6}, links, hashes); !r.OK || r.Latest.Seq != 6 || r.Uncovered != 0 || r.CheckpointsChecked != 2 {
		t.Fatalf("clean: %+v %+v", r, r.Problem)
	}
	if r := run(cp3, nil, links, hashes); !r.OK || r.Latest.Seq != 3 || r.Uncovered != 3 {
		t.Fatalf("clean, no stored: %+v", r)
	}
	// Cut after 4 with cp6 stored: truncated.
	if r := run(cp3, []auditchain.Checkpoint{cp6}, links[:4], hashes[:4]); r.OK || r.Problem.Kind != auditchain.ProblemTruncated || r.Problem.Seq != 5 {
		t.Errorf("cut tail: %+v", r.Problem)
	}
	// Cut below the trusted checkpoint itself.
	if r := run(cp3, nil, links[:2], hashes[:2]); r.OK || r.Problem.Kind != auditchain.ProblemTruncated {
		t.Errorf("cut below the anchor: %+v", r.Problem)
	}
	// A gap.
	gl := append(append([]auditchain.Link{}, links[:1]...), links[2:]...)
	gh := append(append([]string{}, hashes[:1]...), hashes[2:]...)
	if r := run(cp3, nil, gl, gh); r.OK || r.Problem.Kind != auditchain.ProblemMissing || r.Problem.Seq != 2 {
		t.Errorf("gap: %+v", r.Problem)
	}
	// A stored checkpoint of another key.
	forged := auditchain.Sign(key(9), "t1", 6, hashes[5], at)
	if r := run(cp3, []auditchain.Checkpoint{forged}, links, hashes); r.OK || r.Problem.Kind != auditchain.ProblemForgedCheckpoint {
		t.Errorf("forged stored checkpoint: %+v", r.Problem)
	}
	if _, err := auditchain.NewVerifier(forged, pub(k)); !errors.Is(err, auditchain.ErrUntrustedKey) {
		t.Errorf("forged anchor: %v", err)
	}
}

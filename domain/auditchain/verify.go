package auditchain

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"sort"
)

// Problem kinds of a Report. Stable strings (the CLI prints them, tests match them).
const (
	// ProblemEdited: an entry's contents do not match its hash, or its prev_hash does not match
	// the entry before it.
	ProblemEdited = "edited"
	// ProblemMissing: a seq is missing (an entry in the middle was removed) or out of order.
	ProblemMissing = "missing"
	// ProblemRewritten: the chain verifies by itself but its hash at a checkpoint's seq is not
	// the signed head (entries up to there were rewritten and the chain recomputed).
	ProblemRewritten = "rewritten"
	// ProblemTruncated: a checkpoint covers entries that are no longer there (a cut tail).
	ProblemTruncated = "truncated"
	// ProblemForgedCheckpoint: a stored checkpoint is not signed by a trusted key, or its fields
	// were altered.
	ProblemForgedCheckpoint = "forged_checkpoint"
)

// Problem is the first thing found wrong.
type Problem struct {
	Kind string `json:"kind"`
	// Seq is the entry (or checkpoint) seq concerned.
	Seq    uint64 `json:"seq"`
	Detail string `json:"detail"`
}

// Report is the outcome of a verification.
type Report struct {
	// OK is true when nothing is wrong.
	OK bool `json:"ok"`
	// Problem is the first problem (nil when OK).
	Problem *Problem `json:"problem,omitempty"`
	// Checked is the number of entries read; Head and HeadHash are the last one's seq and hash.
	Checked  int    `json:"checked"`
	Head     uint64 `json:"head"`
	HeadHash string `json:"head_hash"`
	// CheckpointsChecked counts the checkpoints (the trusted one and the stored ones at or after
	// it) whose head was compared with the chain.
	CheckpointsChecked int `json:"checkpoints_checked"`
	// Latest is the newest checkpoint that verified (keep it outside for the next run).
	Latest Checkpoint `json:"latest"`
	// Uncovered is the number of entries after Latest: protected by the hash chain only, so a
	// rewrite or cut of them is not detectable until a checkpoint covers them.
	Uncovered uint64 `json:"uncovered"`
}

// Verifier checks a tenant's chain, read entry by entry from seq 1, against a trusted
// checkpoint and the stored checkpoints. Use: NewVerifier, Stored for each stored checkpoint,
// Entry for each entry in seq order, then Finish. It is not safe for concurrent use.
type Verifier struct {
	keys    []ed25519.PublicKey
	since   Checkpoint
	anchors map[uint64]Checkpoint
	stored  []Checkpoint
	prev    string
	rep     Report
}

// ErrCheckpointTenant: the trusted checkpoint is of another tenant than the chain verified.
var ErrCheckpointTenant = errors.New("auditchain: checkpoint of another tenant")

// NewVerifier returns a verifier anchored at since, which must be signed by one of keys (else
// the error says why: errors.Is ErrUntrustedKey or ErrBadSignature).
func NewVerifier(since Checkpoint, keys ...ed25519.PublicKey) (*Verifier, error) {
	if err := since.Verify(keys...); err != nil {
		return nil, fmt.Errorf("checkpoint given: %w", err)
	}
	v := &Verifier{keys: keys, since: since, anchors: map[uint64]Checkpoint{since.Seq: since}}
	v.rep.OK, v.rep.Latest = true, since
	return v, nil
}

func (v *Verifier) fail(kind string, seq uint64, format string, args ...any) {
	if v.rep.OK {
		v.rep.OK, v.rep.Problem = false, &Problem{Kind: kind, Seq: seq, Detail: fmt.Sprintf(format, args...)}
	}
}

// Stored adds a checkpoint kept with the entries. Those before the trusted checkpoint are
// ignored; the others must verify with the keys and match the chain at their seq.
func (v *Verifier) Stored(c Checkpoint) {
	if c.Seq < v.since.Seq || (c.Seq == v.since.Seq && c.Signature == v.since.Signature) {
		return
	}
	if c.TenantID != v.since.TenantID {
		v.fail(ProblemForgedCheckpoint, c.Seq, "stored checkpoint of tenant %q", c.TenantID)
		return
	}
	if err := c.Verify(v.keys...); err != nil {
		v.fail(ProblemForgedCheckpoint, c.Seq, "stored checkpoint at seq %d: %v", c.Seq, err)
		return
	}
	if a, ok := v.anchors[c.Seq]; ok && a.Head != c.Head {
		v.fail(ProblemForgedCheckpoint, c.Seq, "two signed checkpoints at seq %d with different heads", c.Seq)
		return
	}
	v.anchors[c.Seq] = c
	v.stored = append(v.stored, c)
}

// Entry checks the next entry: l is its content, hash its stored hash. Entries must come in
// stored seq order starting at the first.
func (v *Verifier) Entry(l Link, hash string) {
	if !v.rep.OK {
		return
	}
	want := uint64(v.rep.Checked) + 1
	v.rep.Checked++
	switch {
	case l.Tenant != v.since.TenantID:
		v.fail(ProblemEdited, l.Seq, "entry of tenant %q in the chain of %q", l.Tenant, v.since.TenantID)
	case l.Seq != want:
		v.fail(ProblemMissing, want, "seq %d where %d was expected (an entry is missing)", l.Seq, want)
	case l.PrevHash != v.prev:
		v.fail(ProblemEdited, l.Seq, "prev_hash does not match the previous entry's hash")
	case l.Hash() != hash:
		v.fail(ProblemEdited, l.Seq, "hash does not match the entry's contents")
	}
	if !v.rep.OK {
		return
	}
	if a, ok := v.anchors[l.Seq]; ok {
		v.rep.CheckpointsChecked++
		if a.Head != hash {
			v.fail(ProblemRewritten, l.Seq, "entry %d's hash is not the head signed at %s (the chain up to it was rewritten)",
				l.Seq, a.At.Format("2006-01-02T15:04:05Z07:00"))
			return
		}
		if a.Seq >= v.rep.Latest.Seq {
			v.rep.Latest = a
		}
	}
	v.prev, v.rep.Head, v.rep.HeadHash = hash, l.Seq, hash
}

// Finish returns the report. A checkpoint past the last entry read means the tail was cut.
func (v *Verifier) Finish() Report {
	if v.rep.OK {
		var past []Checkpoint
		for _, a := range v.anchors {
			if a.Seq > v.rep.Head {
				past = append(past, a)
			}
		}
		sort.Slice(past, func(i, j int) bool { return past[i].Seq > past[j].Seq })
		if len(past) > 0 {
			v.fail(ProblemTruncated, v.rep.Head+1, "the chain ends at seq %d but a checkpoint signed at %s covers %d entries",
				v.rep.Head, past[0].At.Format("2006-01-02T15:04:05Z07:00"), past[0].Seq)
		}
	}
	if v.rep.OK {
		v.rep.Uncovered = v.rep.Head - v.rep.Latest.Seq
	}
	return v.rep
}

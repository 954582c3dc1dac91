package connection_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/domain/connection"
)

// referencePrepare is PrepareBroadcast's recipient check as a plain sequential loop: the first
// recipient that is invalid or repeats an earlier one is the error.
func referencePrepare(recipients []string, region string) (code connection.Code, at int, out []string) {
	seen := map[string]bool{}
	for i, raw := range recipients {
		p, err := connection.NormalizePhone("recipients", raw, region)
		if err != nil {
			return connection.CodeInvalidPhone, i + 1, nil
		}
		if seen[p] {
			return connection.CodeDuplicateRecipient, i + 1, nil
		}
		seen[p] = true
		out = append(out, p)
	}
	return "", 0, out
}

// TestPrepareBroadcastLongListsMatchSequential checks that the parallel normalisation of long
// recipient lists reports exactly what a sequential loop reports — the same first offending
// recipient, whether it is invalid or a duplicate, wherever the split between workers falls —
// and the same numbers in the same order when all are valid.
func TestPrepareBroadcastLongListsMatchSequential(t *testing.T) {
	// The parallel path runs only with two or more Ps (it would compare the loop with itself).
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(4))
	rng := rand.New(rand.NewPCG(12, 2026))
	rounds := 60
	if testing.Short() {
		rounds = 4
	}
	for round := range rounds {
		n := 2000 + rng.IntN(9000)
		list := make([]string, n)
		for i := range list {
			if rng.IntN(2) == 0 {
				list[i] = fmt.Sprintf("0151 %08d", round*100000+i) // national, read in DE
			} else {
				list[i] = fmt.Sprintf("+49151%08d", round*100000+i)
			}
		}
		// Up to three faults at random positions: an invalid number, a duplicate (in another
		// spelling of an earlier number), or both; some rounds have none.
		for range rng.IntN(4) {
			at := rng.IntN(n)
			switch rng.IntN(3) {
			case 0:
				list[at] = "+12" // too short
			case 1:
				list[at] = "not a number"
			default:
				if at > 0 {
					list[at] = fmt.Sprintf("+49 151 %08d", round*100000+rng.IntN(at))
				}
			}
		}
		wantCode, wantAt, wantOut := referencePrepare(list, "DE")
		p, err := connection.PrepareBroadcast(connection.StartBroadcast{
			BroadcastID: uuid.New(), Recipients: list, Text: "hi", Actor: "test",
		}, "DE")
		if wantCode == "" {
			if err != nil {
				t.Fatalf("round %d (%d numbers): %v, want no error", round, n, err)
			}
			got := p.Recipients()
			if len(got) != len(wantOut) {
				t.Fatalf("round %d: %d numbers, want %d", round, len(got), len(wantOut))
			}
			for i := range got {
				if got[i] != wantOut[i] {
					t.Fatalf("round %d: number %d = %q, want %q", round, i, got[i], wantOut[i])
				}
			}
			continue
		}
		var ve *connection.ValidationError
		if !errors.As(err, &ve) {
			t.Fatalf("round %d: %v, want a ValidationError %s at %d", round, err, wantCode, wantAt)
		}
		if ve.Code != wantCode || ve.Recipient != wantAt {
			t.Fatalf("round %d (%d numbers): %s at recipient %d, want %s at %d (%v)", round, n, ve.Code, ve.Recipient, wantCode, wantAt, err)
		}
	}
}

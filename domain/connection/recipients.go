package connection

import (
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
)

// parallelFrom is the list length from which normalizeRecipients spreads the work over the
// CPUs: below it, starting goroutines costs more than it saves (a number takes ~20 µs).
const parallelFrom = 2048

// normalizeRecipients normalises raws to E.164 like NormalizePhone, in parallel for long lists.
// It returns the normalised numbers and -1, or, for a list with an invalid number, the index and
// error of the FIRST one (the lowest index, as a sequential loop finds it) with every number
// before it normalised in out[:bad]. The result does not depend on how the work was split: each
// number is normalised on its own (a pure function of the number and region).
func normalizeRecipients(raws []string, region string) ([]string, int, error) {
	out := make([]string, len(raws))
	workers := min(runtime.GOMAXPROCS(0), len(raws)/parallelFrom+1)
	if workers <= 1 {
		for i, raw := range raws {
			p, err := NormalizePhone("recipients", raw, region)
			if err != nil {
				return out, i, err
			}
			out[i] = p
		}
		return out, -1, nil
	}
	// firstBad is the lowest index found invalid so far; a worker stops past it, since no
	// later error can be the one reported.
	var firstBad atomic.Int64
	firstBad.Store(int64(len(raws)))
	errs := make([]error, workers)
	bad := make([]int, workers)
	chunk := (len(raws) + workers - 1) / workers
	var wg sync.WaitGroup
	for w := range workers {
		lo, hi := w*chunk, min((w+1)*chunk, len(raws))
		bad[w] = -1
		wg.Go(func() {
			for i := lo; i < hi; i++ {
				if int64(i) > firstBad.Load() {
					return
				}
				p, err := NormalizePhone("recipients", raws[i], region)
				if err != nil {
					errs[w], bad[w] = err, i
					for {
						cur := firstBad.Load()
						if int64(i) >= cur || firstBad.CompareAndSwap(cur, int64(i)) {
							break
						}
					}
					return
				}
				out[i] = p
			}
		})
	}
	wg.Wait()
	// Chunks are in index order, so the first error found is the lowest index. firstBad only
	// falls, and a worker stops only past it, so every index before that one was normalised.
	for w := range workers {
		if errs[w] != nil {
			return out, bad[w], errs[w]
		}
	}
	return out, -1, nil
}

// duplicateOf returns the error for the first number of normalized that repeats an earlier
// one, or nil.
func duplicateOf(normalized []string) *ValidationError {
	seen := make(map[string]int, len(normalized))
	for i, p := range normalized {
		if first, dup := seen[p]; dup {
			return &ValidationError{Code: CodeDuplicateRecipient, Field: "recipients", Recipient: i + 1,
				Detail: "same number as recipient " + strconv.Itoa(first+1)}
		}
		seen[p] = i
	}
	return nil
}

// Package storetest is the conformance suite of the eventstore port. Every adapter runs it from
// its own tests:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T, clock eventstore.Clock) eventstore.Store {
//			...
//		}, storetest.Options{Short: testing.Short()})
//	}
//
// The factory returns a store that records times with clock. It may return the same underlying
// database for every call: the suite names streams uniquely per test (see TestID) and filters
// the global log by those names, so its tests run in parallel against a shared database.
// The factory registers cleanup with t.Cleanup.
//
// The suite is production code imported only by tests; it uses the standard testing package and
// nothing else, so importing it pulls no test library into a binary.
package storetest

import (
	"testing"
	"time"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/internal/testwait"
)

// Factory builds a store for one test. clock is the store's clock; the store must stamp every
// event it writes with clock() (the suite's clocks return UTC times truncated to the
// microsecond, so any adapter that keeps at least microsecond precision round-trips them).
type Factory func(t *testing.T, clock eventstore.Clock) eventstore.Store

// Options tunes the suite for an adapter.
type Options struct {
	// Short runs the large-volume tests (100k events) with smaller volumes (10k); set it from
	// testing.Short().
	Short bool
	// Timeout bounds every wait of the suite for an event to arrive through Subscribe. It is a
	// generous upper bound for a failure to show, never an assertion of speed. Zero means
	// testwait.Limit (it was 30 s, shorter than the project's hang guard).
	Timeout time.Duration
	// ReportsExisting is set for adapters that mark an idempotent retry with
	// AppendResult.Existing (sqlite, postgres); the suite then requires it.
	ReportsExisting bool
}

func (o *Options) setDefaults() {
	if o.Timeout <= 0 {
		o.Timeout = testwait.Limit
	}
}

// Run runs the whole suite against the adapter built by f. Every subtest calls t.Parallel.
//
// What it holds an adapter to, beyond the port's doc comments:
//   - errors: wrong expectations as *eventstore.WrongExpectedRevisionError with the stream's
//     actual revision; ids stored elsewhere as *eventstore.DuplicateEventError naming the id
//     (a batch whose stored prefix is followed by new events may fail either way);
//   - RecordedAt is a time the injected clock returned, in UTC (time.UTC location);
//   - Data round-trips as equal JSON (formatting may change), Metadata exactly;
//   - a stream that was never written reads as ErrStreamNotFound, also after empty appends;
//   - positions strictly increase in ReadAll and Subscribe, agree with revision order and with
//     happens-before, also across two stores from the factory;
//   - eventstore.SubscribePages (a PageSubscriber's, or the fallback on Subscribe) passes the
//     Subscribe tests too, hands over no empty page and never changes a page once handed over;
//   - Subscribe delivers what a later ReadAll returns, in the same order, exactly once across
//     stops and resumes from the last handled Position, while writers append concurrently.
//
// Subtests never assert speed: waits for events end only after Options.Timeout.
func Run(t *testing.T, f Factory, opts Options) {
	t.Helper()
	opts.setDefaults()
	s := &suite{factory: f, opts: opts}
	tests := []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"ExpectedRevision", s.testExpectedRevision},
		{"ExpectedRevisionAfterAppends", s.testExpectedRevisionAfterAppends},
		{"EmptyAppend", s.testEmptyAppend},
		{"ConcurrentWritersOneWins", s.testConcurrentWritersOneWins},
		{"ConcurrentCreateOneWins", s.testConcurrentCreateOneWins},
		{"ConcurrentSinglesOneConflicts", s.testConcurrentSinglesOneConflicts},
		{"IdempotentReappend", s.testIdempotentReappend},
		{"IdempotentReappendPrefix", s.testIdempotentReappendPrefix},
		{"DuplicateEventID", s.testDuplicateEventID},
		{"FailedBatchLeavesNothing", s.testFailedBatchLeavesNothing},
		{"InvalidInput", s.testInvalidInput},
		{"RecordedFields", s.testRecordedFields},
		{"ReadStream", s.testReadStream},
		{"ReadStreamNotFound", s.testReadStreamNotFound},
		{"ReadEventByID", s.testReadEventByID},
		{"VolumeOneStream", s.testVolumeOneStream},
		{"VolumeManyStreams", s.testVolumeManyStreams},
		{"GlobalOrderConcurrent", s.testGlobalOrderConcurrent},
		{"HappensBefore", s.testHappensBefore},
		{"ReadAllFilters", s.testReadAllFilters},
		{"ReadAllAfterAndLimit", s.testReadAllAfterAndLimit},
		{"SubscribeCatchUpThenLive", s.testSubscribeCatchUpThenLive},
		{"SubscribeFromPosition", s.testSubscribeFromPosition},
		{"SubscribeFilter", s.testSubscribeFilter},
		{"SubscribeResumeExactlyOnce", s.testSubscribeResumeExactlyOnce},
		{"SubscribeHandleError", s.testSubscribeHandleError},
		{"SubscribeCancel", s.testSubscribeCancel},
		{"SubscribePagesAreTheHandlers", s.testSubscribePagesAreTheHandlers},
	}
	// The Subscribe tests again through eventstore.SubscribePages (the store's PageSubscriber,
	// or the fallback on Subscribe), each page handed on one event at a time.
	pages := &suite{factory: f, opts: opts, pages: true}
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"SubscribeCatchUpThenLive", pages.testSubscribeCatchUpThenLive},
		{"SubscribeFromPosition", pages.testSubscribeFromPosition},
		{"SubscribeFilter", pages.testSubscribeFilter},
		{"SubscribeResumeExactlyOnce", pages.testSubscribeResumeExactlyOnce},
		{"SubscribeHandleError", pages.testSubscribeHandleError},
		{"SubscribeCancel", pages.testSubscribeCancel},
	} {
		tests = append(tests, struct {
			name string
			fn   func(t *testing.T)
		}{"Pages" + tc.name, tc.fn})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t)
		})
	}
}

type suite struct {
	factory Factory
	opts    Options
	pages   bool // Subscribe through eventstore.SubscribePages (subscribeFunc)
}

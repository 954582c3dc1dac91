// Package storetest is the conformance suite of the eventstore port. Every adapter runs it from
// its own tests:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T, clock eventstore.Clock) eventstore.Store { ... })
//	}
//
// The factory returns a store that records times with clock. It may return the same underlying
// database for every call: the suite names streams uniquely per test (see TestID) and filters
// the global log by those names, so its tests run in parallel against a shared database.
// The factory registers cleanup with t.Cleanup.
package storetest

import (
	"testing"

	"github.com/waqueue/waqueue/adapters/eventstore"
)

// Factory builds a store for one test.
type Factory func(t *testing.T, clock eventstore.Clock) eventstore.Store

// Options tunes the suite for an adapter.
type Options struct {
	// Short runs the large-volume tests (100k events) with smaller volumes; set from testing.Short().
	Short bool
}

// Run runs the whole suite against the adapter built by f.
func Run(t *testing.T, f Factory, opts Options) {
	t.Helper()
	// Filled in by the suite implementation.
}

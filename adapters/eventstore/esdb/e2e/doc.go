// Package e2e holds the end-to-end proof of the EventStoreDB adapter: the real `waqueue serve`
// binary keeps its events in EventStoreDB (the in-process esdbtest server) and its read models in
// PostgreSQL, and is driven over its HTTP API through a broadcast, a ban and a clear. The package
// has no code of its own; everything is in its tests.
package e2e

// Package faults holds waqueue's fault tests: a node killed with SIGKILL in the middle of a
// broadcast and of a clear and restarted on the same data, PostgreSQL stopped under load, a
// projection that keeps failing on one event, and a load test with clears, bans and lifts under
// 64 concurrent clients, each ending in domain/invariants.Check over every connection's history.
//
// The package has no non-test code. The tests that take minutes carry the build tag "faults"
// (`make test-faults`); the others run in `make test`. docs/reliability.md lists each fault,
// what is checked and the result observed.
package faults

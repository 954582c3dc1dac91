// Package domain is waqueue's pure domain model: no I/O, no clock reads, no goroutines,
// deterministic. Its subpackages are:
//
//   - connection: the connection aggregate (link status, queue, Clear Queue), its events with
//     stable type names, their codec, decisions and deterministic ids;
//   - auth: rights, roles and principals;
//   - auditchain: the audit trail's hash chain, its Ed25519-signed checkpoints and their
//     verification (G8).
package domain

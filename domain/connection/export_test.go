package connection

// Fingerprint functions for the external tests, which fill them into expected events.
var (
	EnqueueFingerprintOf   = enqueueFingerprint
	BroadcastFingerprintOf = broadcastFingerprint
)

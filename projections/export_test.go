package projections

// NewRowQueue returns the Queue projection as it was before issue 12: one queue_messages row
// per queued message, never a run. The randomized tests compare its answers with NewQueue's.
func NewRowQueue() *Queue { return &Queue{rowsOnly: true} }

// NewRowMessageStatus returns the message-status projection as it was before issue 12: one
// status_messages row per queued message, never a run, and one statement per message event on
// PostgreSQL too (not flushMoves).
func NewRowMessageStatus() *MessageStatus { return &MessageStatus{rowsOnly: true, perEvent: true} }

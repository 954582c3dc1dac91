package projections

// NewRowQueue returns the Queue projection as it was before issue 12: one queue_messages row
// per queued message, never a run. The randomized tests compare its answers with NewQueue's.
func NewRowQueue() *Queue { return &Queue{rowsOnly: true} }

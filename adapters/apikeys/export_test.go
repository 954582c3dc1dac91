package apikeys

// SetBeforeAppend sets the hook a tenant change runs between its decision and its append.
func SetBeforeAppend(k *Keys, f func()) { k.beforeAppend = f }

// SetBeforeLookup sets the hook each shared key query runs before it is sent.
func SetBeforeLookup(k *Keys, f func()) { k.beforeLookup = f }

// QueuedLookups returns the number of key lookups waiting for a query.
func QueuedLookups(k *Keys) int {
	k.lookups.mu.Lock()
	defer k.lookups.mu.Unlock()
	return len(k.lookups.queue)
}

// LookupQueries returns the key queries run so far and those that served several lookups.
func LookupQueries(k *Keys) (queries, shared int) {
	k.lookups.mu.Lock()
	defer k.lookups.mu.Unlock()
	return k.lookups.queries, k.lookups.shared
}

// MaxLookupQueries is maxLookupQueries.
const MaxLookupQueries = maxLookupQueries

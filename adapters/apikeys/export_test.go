package apikeys

// SetBeforeAppend sets the hook a tenant change runs between its decision and its append.
func SetBeforeAppend(k *Keys, f func()) { k.beforeAppend = f }

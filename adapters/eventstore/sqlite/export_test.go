package sqlite

// SetScanWindow sets how many rows one filtered Subscribe query may scan, so that a test can
// cross several windows with few events.
func SetScanWindow(o *Options, rows int64) { o.scanWindow = rows }

package wmtransport

import (
	"context"
	"log/slog"
	"sync"
	"testing"
)

// recordingHandler keeps every record it is given, at or above min.
type recordingHandler struct {
	min   slog.Level
	mu    *sync.Mutex
	recs  *[]slog.Record
	attrs []slog.Attr
}

func newRecordingHandler(min slog.Level) *recordingHandler {
	return &recordingHandler{min: min, mu: &sync.Mutex{}, recs: &[]slog.Record{}}
}

func (h *recordingHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.min }
func (h *recordingHandler) Handle(_ context.Context, r slog.Record) error {
	r = r.Clone()
	r.AddAttrs(h.attrs...)
	h.mu.Lock()
	*h.recs = append(*h.recs, r)
	h.mu.Unlock()
	return nil
}
func (h *recordingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(append([]slog.Attr{}, h.attrs...), as...)
	return &c
}
func (h *recordingHandler) WithGroup(string) slog.Handler { return h }

func (h *recordingHandler) records() []slog.Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]slog.Record(nil), *h.recs...)
}

func attr(r slog.Record, key string) (string, bool) {
	var v string
	var ok bool
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v, ok = a.Value.String(), true
			return false
		}
		return true
	})
	return v, ok
}

// TestSlogBridgeLevelsAndModules: each whatsmeow level lands at its slog level, formatted, with
// the Sub path as the module attribute; levels below the handler's minimum are dropped before
// formatting.
func TestSlogBridgeLevelsAndModules(t *testing.T) {
	h := newRecordingHandler(slog.LevelDebug)
	root := SlogLogger(slog.New(h))
	root.Infof("root %s", "line")
	client := root.Sub("conn-1")
	client.Debugf("debug %d", 1)
	client.Infof("info %d", 2)
	client.Sub("Recv").Warnf("warn %d", 3)
	root.Sub("sqlstore").Errorf("error %d", 4)

	want := []struct {
		level  slog.Level
		msg    string
		module string
	}{
		{slog.LevelInfo, "root line", ""},
		{slog.LevelDebug, "debug 1", "conn-1"},
		{slog.LevelInfo, "info 2", "conn-1"},
		{slog.LevelWarn, "warn 3", "conn-1/Recv"},
		{slog.LevelError, "error 4", "sqlstore"},
	}
	got := h.records()
	if len(got) != len(want) {
		t.Fatalf("got %d records, want %d: %v", len(got), len(want), got)
	}
	for i, w := range want {
		r := got[i]
		mod, hasMod := attr(r, ModuleKey)
		if r.Level != w.level || r.Message != w.msg || mod != w.module || hasMod != (w.module != "") {
			t.Errorf("record %d = %s %q module %q (%v); want %s %q module %q", i, r.Level, r.Message, mod, hasMod, w.level, w.msg, w.module)
		}
	}

	// A handler at Warn drops debug and info without formatting their arguments.
	warn := newRecordingHandler(slog.LevelWarn)
	l := SlogLogger(slog.New(warn)).Sub("c")
	l.Debugf("%v", panicStringer{t})
	l.Infof("%v", panicStringer{t})
	l.Errorf("kept")
	if got := warn.records(); len(got) != 1 || got[0].Message != "kept" || got[0].Level != slog.LevelError {
		t.Fatalf("at warn: %v, want only the error", got)
	}

	if SlogLogger(nil).Sub("x") == nil {
		t.Fatal("SlogLogger(nil) must discard, not be nil")
	}
}

// panicStringer fails the test when formatted.
type panicStringer struct{ t *testing.T }

func (p panicStringer) String() string {
	p.t.Error("a disabled level formatted its arguments")
	return ""
}

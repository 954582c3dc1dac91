package wmtransport

import (
	"context"
	"fmt"
	"log/slog"

	waLog "go.mau.fi/whatsmeow/util/log"
)

// ModuleKey is the slog attribute that names the whatsmeow module of a record ("Client/Recv",
// "sqlstore", a connection id and its sub-modules).
const ModuleKey = "module"

// SlogLogger bridges whatsmeow's logger interface to l: Debugf, Infof, Warnf and Errorf become
// records at slog's Debug, Info, Warn and Error levels, and Sub(module) extends the ModuleKey
// attribute, joined with "/" as whatsmeow's own loggers do ("conn-1/Recv"). A message is
// formatted only when l is enabled for its level, so whatsmeow's chatty debug output costs
// nothing in production. A nil l discards everything (waLog.Noop). Safe for concurrent use.
func SlogLogger(l *slog.Logger) waLog.Logger {
	if l == nil {
		return waLog.Noop
	}
	return slogLogger{l: l}
}

type slogLogger struct {
	l      *slog.Logger
	module string
}

func (s slogLogger) logf(level slog.Level, format string, args []any) {
	ctx := context.Background()
	if !s.l.Enabled(ctx, level) {
		return
	}
	msg := format
	if len(args) > 0 {
		msg = fmt.Sprintf(format, args...)
	}
	if s.module == "" {
		s.l.Log(ctx, level, msg)
		return
	}
	s.l.Log(ctx, level, msg, slog.String(ModuleKey, s.module))
}

func (s slogLogger) Debugf(format string, args ...any) { s.logf(slog.LevelDebug, format, args) }
func (s slogLogger) Infof(format string, args ...any)  { s.logf(slog.LevelInfo, format, args) }
func (s slogLogger) Warnf(format string, args ...any)  { s.logf(slog.LevelWarn, format, args) }
func (s slogLogger) Errorf(format string, args ...any) { s.logf(slog.LevelError, format, args) }

// Sub returns a logger whose records carry module under the current one.
func (s slogLogger) Sub(module string) waLog.Logger {
	if s.module != "" {
		module = s.module + "/" + module
	}
	return slogLogger{l: s.l, module: module}
}

// Package badgerlog sends Badger's log lines to log/slog, so a service's
// Badger chatter lands in its structured logs (component=badger): errors
// and warnings as they are, Badger's info lines at debug level and its
// debug lines below that (they are about compactions and value-log
// rotation, not about the service).
package badgerlog

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/dgraph-io/badger/v4"
)

// New returns a badger.Logger writing to log; a nil log discards.
func New(log *slog.Logger) badger.Logger { return logger{log} }

type logger struct{ l *slog.Logger }

func (b logger) log(level slog.Level, format string, args ...any) {
	// Check first: Badger logs often, and formatting costs even when the
	// line is dropped.
	if b.l == nil || !b.l.Enabled(context.Background(), level) {
		return
	}
	b.l.Log(context.Background(), level, strings.TrimSpace(fmt.Sprintf(format, args...)), "component", "badger")
}

func (b logger) Errorf(f string, a ...any)   { b.log(slog.LevelError, f, a...) }
func (b logger) Warningf(f string, a ...any) { b.log(slog.LevelWarn, f, a...) }
func (b logger) Infof(f string, a ...any)    { b.log(slog.LevelDebug, f, a...) }
func (b logger) Debugf(f string, a ...any)   { b.log(slog.LevelDebug-4, f, a...) }

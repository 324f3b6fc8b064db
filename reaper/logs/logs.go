// Package logs is reaper's logger: a zap core used directly, writing one
// plain line per entry ("reaper: warning: message key=value ...") or one
// JSON object per line, to a writer that never raises SIGPIPE.
//
// What reaper logs holds what other processes wrote: command lines, comm
// values, port holders, paths. Nothing of it reaches the log raw: in both
// formats, messages and field values alike, a C0 control (newline and
// escape included), DEL, a C1 control (U+0080 to U+009F, which some
// terminals take for escape sequences) and invalid UTF-8 are written as
// escapes, so that no value can end a line, forge one, or move a
// terminal's cursor (see Escape).
//
// The zap package proper would link net/http and crypto into reaper (its
// level handler and sink registry): a megabyte of binary and their package
// initialisation at every start.
package logs

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap/buffer"
	"go.uber.org/zap/zapcore"

	"github.com/reaper-init/reaper/signals"
)

// Log formats.
const (
	Console = "console"
	JSON    = "json"
)

// Logger writes reaper's log entries.
type Logger struct {
	core zapcore.Core
}

// New returns a Logger writing to w: warnings and errors only at verbosity
// 0, info at 1, debug at 2 and above. The console format is one plain line
// per entry, "reaper: warning: message key=value ...", with no level word
// for errors; the json format is zap's, one object per line. Once a write
// fails (stderr closed, or a pipe whose reader is gone), the Logger drops
// everything: reaper goes on without logs rather than failing.
func New(w io.Writer, format string, verbosity int) (*Logger, error) {
	level := zapcore.WarnLevel
	switch {
	case verbosity >= 2:
		level = zapcore.DebugLevel
	case verbosity == 1:
		level = zapcore.InfoLevel
	}
	var enc zapcore.Encoder
	switch format {
	case Console, "":
		enc = &lineEncoder{MapObjectEncoder: zapcore.NewMapObjectEncoder()}
	case JSON:
		enc = jsonEncoder{zapcore.NewJSONEncoder(zapcore.EncoderConfig{
			TimeKey: "ts", LevelKey: "level", NameKey: "logger", MessageKey: "msg",
			LineEnding: zapcore.DefaultLineEnding, EncodeLevel: zapcore.LowercaseLevelEncoder,
			EncodeTime: zapcore.RFC3339NanoTimeEncoder, EncodeDuration: zapcore.StringDurationEncoder,
		})}
	default:
		return nil, fmt.Errorf("log format %q is neither console nor json", format)
	}
	return &Logger{core: zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(&quitOnError{w: w})), level)}, nil
}

// Discard returns a Logger that writes nothing.
func Discard() *Logger {
	return &Logger{core: zapcore.NewNopCore()}
}

// DebugEnabled reports whether debug entries are written (-vv).
func (l *Logger) DebugEnabled() bool { return l.core.Enabled(zapcore.DebugLevel) }

func (l *Logger) write(level zapcore.Level, msg string, fields []zapcore.Field) {
	if !l.core.Enabled(level) {
		return
	}
	l.core.Write(zapcore.Entry{Level: level, Time: time.Now(), LoggerName: "reaper", Message: msg}, fields)
}

// Debug logs at debug level (-vv).
func (l *Logger) Debug(msg string, fields ...zapcore.Field) { l.write(zapcore.DebugLevel, msg, fields) }

// Info logs at info level (-v).
func (l *Logger) Info(msg string, fields ...zapcore.Field) { l.write(zapcore.InfoLevel, msg, fields) }

// Warn logs a warning.
func (l *Logger) Warn(msg string, fields ...zapcore.Field) { l.write(zapcore.WarnLevel, msg, fields) }

// Error logs an error.
func (l *Logger) Error(msg string, fields ...zapcore.Field) { l.write(zapcore.ErrorLevel, msg, fields) }

// Sync flushes the core.
func (l *Logger) Sync() { l.core.Sync() }

// Field constructors, as zap's.

// Int is an integer field.
func Int(key string, v int) zapcore.Field {
	return zapcore.Field{Key: key, Type: zapcore.Int64Type, Integer: int64(v)}
}

// String is a string field.
func String(key, v string) zapcore.Field {
	return zapcore.Field{Key: key, Type: zapcore.StringType, String: v}
}

// Duration is a duration field.
func Duration(key string, d time.Duration) zapcore.Field {
	return zapcore.Field{Key: key, Type: zapcore.DurationType, Integer: int64(d)}
}

// stringer is a field written with v's String method.
func stringer(key string, v fmt.Stringer) zapcore.Field {
	return zapcore.Field{Key: key, Type: zapcore.StringerType, Interface: v}
}

// Signal is a field that names a signal: signal=SIGTERM.
func Signal(key string, sig syscall.Signal) zapcore.Field {
	return stringer(key, signalName(sig))
}

// Err is the error field.
func Err(err error) zapcore.Field {
	return zapcore.Field{Key: "error", Type: zapcore.ErrorType, Interface: err}
}

// Ints is a list of integers: pids=3,4,5.
func Ints(key string, v []int) zapcore.Field {
	return zapcore.Field{Key: key, Type: zapcore.ArrayMarshalerType, Interface: ints(v)}
}

type signalName syscall.Signal

func (s signalName) String() string { return signals.Name(syscall.Signal(s)) }

type ints []int

func (v ints) MarshalLogArray(enc zapcore.ArrayEncoder) error {
	for _, n := range v {
		enc.AppendInt(n)
	}
	return nil
}

// quitOnError passes writes on until one fails, then drops them all. The
// logger serialises writes to it (zapcore.Lock: the event loop and the
// notification relay log from goroutines of their own); broken is atomic
// for Sync and any reader outside that lock.
type quitOnError struct {
	w      io.Writer
	broken atomic.Bool
}

func (q *quitOnError) Write(p []byte) (int, error) {
	if q.broken.Load() {
		return len(p), nil
	}
	if _, err := q.w.Write(p); err != nil {
		q.broken.Store(true)
	}
	return len(p), nil
}

// lineEncoder writes "reaper: [level: ]message key=value ..." lines. Fields
// given to With are kept in the embedded map and written sorted by key;
// fields of the entry itself keep their order.
type lineEncoder struct {
	*zapcore.MapObjectEncoder
}

func (e *lineEncoder) Clone() zapcore.Encoder {
	clone := zapcore.NewMapObjectEncoder()
	for k, v := range e.Fields {
		clone.Fields[k] = v
	}
	return &lineEncoder{MapObjectEncoder: clone}
}

var linePool = buffer.NewPool()

func (e *lineEncoder) EncodeEntry(ent zapcore.Entry, fields []zapcore.Field) (*buffer.Buffer, error) {
	line := linePool.Get()
	line.AppendString("reaper: ")
	if ent.Level < zapcore.ErrorLevel {
		word := ent.Level.String()
		if ent.Level == zapcore.WarnLevel {
			word = "warning"
		}
		line.AppendString(word + ": ")
	}
	line.AppendString(Escape(ent.Message))
	keys := make([]string, 0, len(e.Fields))
	for k := range e.Fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		appendField(line, k, e.Fields[k])
	}
	for _, f := range fields {
		m := zapcore.NewMapObjectEncoder()
		f.AddTo(m)
		for k, v := range m.Fields {
			appendField(line, k, v)
		}
	}
	line.AppendByte('\n')
	return line, nil
}

// appendField writes " key=value", quoting values that hold spaces, quotes,
// an equals sign, nothing at all, or anything Escape would escape (which
// the quoting escapes).
func appendField(line *buffer.Buffer, key string, value any) {
	var s string
	switch v := value.(type) {
	case string:
		s = v
	case time.Duration:
		s = v.String()
	case []any:
		parts := make([]string, len(v))
		for i, p := range v {
			parts[i] = fmt.Sprint(p)
		}
		s = strings.Join(parts, ",")
	default:
		s = fmt.Sprint(v)
	}
	if s == "" || strings.ContainsAny(s, " \"=") || !safe(s) {
		s = strconv.Quote(s)
	}
	line.AppendString(" " + Escape(key) + "=" + s)
}

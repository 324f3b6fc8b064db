package reaper

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap/buffer"
	"go.uber.org/zap/zapcore"
)

// Log formats reaper writes.
const (
	LogConsole = "console"
	LogJSON    = "json"
)

// logger is reaper's logger: a zap core, used directly. The zap package
// proper would link net/http and crypto into reaper (its level handler and
// sink registry): a megabyte of binary and their package initialisation at
// every start.
type logger struct {
	core zapcore.Core
}

// newLogger returns the logger reaper writes to w: warnings and errors only
// at verbosity 0, info at 1, debug at 2 and above. The console format is one
// plain line per entry, "reaper: warning: message key=value ...", with no
// level word for errors; the json format is zap's, one object per line.
func newLogger(w io.Writer, format string, verbosity int) (*logger, error) {
	level := zapcore.WarnLevel
	switch {
	case verbosity >= 2:
		level = zapcore.DebugLevel
	case verbosity == 1:
		level = zapcore.InfoLevel
	}
	var enc zapcore.Encoder
	switch format {
	case LogConsole, "":
		enc = &lineEncoder{MapObjectEncoder: zapcore.NewMapObjectEncoder()}
	case LogJSON:
		enc = zapcore.NewJSONEncoder(zapcore.EncoderConfig{
			TimeKey: "ts", LevelKey: "level", NameKey: "logger", MessageKey: "msg",
			LineEnding: zapcore.DefaultLineEnding, EncodeLevel: zapcore.LowercaseLevelEncoder,
			EncodeTime: zapcore.RFC3339NanoTimeEncoder, EncodeDuration: zapcore.StringDurationEncoder,
		})
	default:
		return nil, fmt.Errorf("log format %q is neither console nor json", format)
	}
	return &logger{core: zapcore.NewCore(enc, zapcore.AddSync(&quitOnError{w: w}), level)}, nil
}

// enabled reports whether entries at level are written: callers check it
// before building costly fields.
func (l *logger) enabled(level zapcore.Level) bool { return l.core.Enabled(level) }

func (l *logger) write(level zapcore.Level, msg string, fields []zapcore.Field) {
	if !l.core.Enabled(level) {
		return
	}
	l.core.Write(zapcore.Entry{Level: level, Time: time.Now(), LoggerName: "reaper", Message: msg}, fields)
}

// Debug logs at debug level (-vv).
func (l *logger) Debug(msg string, fields ...zapcore.Field) { l.write(zapcore.DebugLevel, msg, fields) }

// Info logs at info level (-v).
func (l *logger) Info(msg string, fields ...zapcore.Field) { l.write(zapcore.InfoLevel, msg, fields) }

// Warn logs a warning.
func (l *logger) Warn(msg string, fields ...zapcore.Field) { l.write(zapcore.WarnLevel, msg, fields) }

// Error logs an error.
func (l *logger) Error(msg string, fields ...zapcore.Field) { l.write(zapcore.ErrorLevel, msg, fields) }

// Sync flushes the core.
func (l *logger) Sync() { l.core.Sync() }

// Field constructors, as zap's.

func intField(key string, v int) zapcore.Field {
	return zapcore.Field{Key: key, Type: zapcore.Int64Type, Integer: int64(v)}
}

func stringField(key, v string) zapcore.Field {
	return zapcore.Field{Key: key, Type: zapcore.StringType, String: v}
}

func durationField(key string, d time.Duration) zapcore.Field {
	return zapcore.Field{Key: key, Type: zapcore.DurationType, Integer: int64(d)}
}

func stringerField(key string, v fmt.Stringer) zapcore.Field {
	return zapcore.Field{Key: key, Type: zapcore.StringerType, Interface: v}
}

func errorField(err error) zapcore.Field {
	return zapcore.Field{Key: "error", Type: zapcore.ErrorType, Interface: err}
}

func intsField(key string, v []int) zapcore.Field {
	return zapcore.Field{Key: key, Type: zapcore.ArrayMarshalerType, Interface: ints(v)}
}

type ints []int

func (v ints) MarshalLogArray(enc zapcore.ArrayEncoder) error {
	for _, n := range v {
		enc.AppendInt(n)
	}
	return nil
}

// quitOnError passes writes on until one fails (stderr closed, or a pipe
// whose reader is gone), then drops them all: reaper goes on without logs
// rather than failing, or writing again and again into a broken pipe.
type quitOnError struct {
	w      io.Writer
	broken bool
}

func (q *quitOnError) Write(p []byte) (int, error) {
	if q.broken {
		return len(p), nil
	}
	if _, err := q.w.Write(p); err != nil {
		q.broken = true
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
	line.AppendString(ent.Message)
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

// appendField writes " key=value", quoting values that hold spaces, quotes
// or nothing at all.
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
	if s == "" || strings.ContainsAny(s, " \t\n\"=") {
		s = strconv.Quote(s)
	}
	line.AppendString(" " + key + "=" + s)
}

package reaper

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/buffer"
	"go.uber.org/zap/zapcore"
)

// Log formats accepted by NewLogger.
const (
	LogConsole = "console"
	LogJSON    = "json"
)

// NewLogger returns the logger reaper writes to w: warnings and errors only
// at verbosity 0, info at 1, debug at 2 and above. The console format is one
// plain line per entry, "reaper: warning: message key=value ...", with no
// level word for errors; the json format is zap's, one object per line.
func NewLogger(w io.Writer, format string, verbosity int) (*zap.Logger, error) {
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
		cfg := zap.NewProductionEncoderConfig()
		cfg.EncodeTime = zapcore.RFC3339NanoTimeEncoder
		cfg.EncodeDuration = zapcore.StringDurationEncoder
		enc = zapcore.NewJSONEncoder(cfg)
	default:
		return nil, fmt.Errorf("log format %q is neither console nor json", format)
	}
	core := zapcore.NewCore(enc, zapcore.AddSync(&quitOnError{w: w}), level)
	return zap.New(core, zap.ErrorOutput(zapcore.AddSync(io.Discard))).Named("reaper"), nil
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

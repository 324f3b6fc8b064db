package logs

import (
	"strconv"
	"unicode"
	"unicode/utf8"

	"go.uber.org/zap/buffer"
	"go.uber.org/zap/zapcore"
)

// Escape returns s with every rune that must not reach a terminal raw
// written as a Go escape: C0 controls (\n, \r, \t, \x1b), DEL (\x7f), C1
// controls (\u009b), other runes Go does not call printable (\u2028, \u202e)
// and the bytes of invalid UTF-8 (\xff). Everything else, backslashes
// included, is kept; s itself is returned when nothing needs escaping.
func Escape(s string) string {
	if safe(s) {
		return s
	}
	out := make([]byte, 0, len(s)+16)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			out = append(out, `\x`...)
			out = append(out, hex[s[i]>>4], hex[s[i]&0xf])
		case unsafeRune(r):
			q := strconv.QuoteRune(r) // '\x1b', '\u009b', '\n'
			out = append(out, q[1:len(q)-1]...)
		default:
			out = append(out, s[i:i+size]...)
		}
		i += size
	}
	return string(out)
}

const hex = "0123456789abcdef"

// safe reports whether s holds nothing Escape would escape.
func safe(s string) bool {
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c < 0x7f {
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 || unsafeRune(r) {
			return false
		}
		i += size
	}
	return true
}

// unsafeRune reports whether r is a control (C0, DEL, C1) or another rune
// Go does not call printable; the space is printable.
func unsafeRune(r rune) bool {
	return r < 0x20 || r == 0x7f || !unicode.IsPrint(r)
}

// jsonEncoder is zap's JSON encoder, with DEL and the C1 controls, which
// zap writes raw, written as \u escapes: a JSON reader reads the same
// string, and a terminal showing the line sees no control. (zap escapes
// the C0 controls itself, and writes invalid UTF-8 as U+FFFD.)
type jsonEncoder struct {
	zapcore.Encoder
}

func (e jsonEncoder) Clone() zapcore.Encoder { return jsonEncoder{e.Encoder.Clone()} }

func (e jsonEncoder) EncodeEntry(ent zapcore.Entry, fields []zapcore.Field) (*buffer.Buffer, error) {
	line, err := e.Encoder.EncodeEntry(ent, fields)
	if err != nil || !hasJSONControls(line.Bytes()) {
		return line, err
	}
	escaped := EscapeJSONControls(line.Bytes())
	line.Reset()
	line.Write(escaped)
	return line, nil
}

// hasJSONControls reports whether valid UTF-8 text b holds DEL or a C1
// control (encoded C2 80 to C2 9F).
func hasJSONControls(b []byte) bool {
	for i, c := range b {
		if c == 0x7f || c == 0xc2 && i+1 < len(b) && b[i+1] < 0xa0 {
			return true
		}
	}
	return false
}

// EscapeJSONControls returns JSON text b with DEL and each C1 control
// written as a \u escape (\u007f, \u009b). b must be valid UTF-8, as
// encoding/json and zap write it; its JSON values are unchanged, and no
// byte of it is a control a terminal acts on.
func EscapeJSONControls(b []byte) []byte {
	if !hasJSONControls(b) {
		return b
	}
	out := make([]byte, 0, len(b)+32)
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch {
		case c == 0x7f:
			out = append(out, `\u007f`...)
		case c == 0xc2 && i+1 < len(b) && b[i+1] < 0xa0:
			i++
			out = append(out, '\\', 'u', '0', '0', hex[b[i]>>4], hex[b[i]&0xf])
		default:
			out = append(out, c)
		}
	}
	return out
}

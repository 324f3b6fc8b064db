package notify

import (
	"bytes"
	"slices"
	"strings"
)

// trustKeys are the assignments that would move systemd's trust to
// another process: MAINPID=, MAINPIDFD= and MAINPIDFDID= make it the
// unit's main process, NOTIFYACCESS= (systemd 254 and later) changes who
// may notify at all. The relay sends with reaper's credentials, so systemd
// would take them from reaper.
var trustKeys = []string{"MAINPID", "MAINPIDFD", "MAINPIDFDID", "NOTIFYACCESS"}

// assignments splits a notification's text as systemd does: the text ends
// at its first NUL (systemd 252 and later ignore a datagram with a NUL
// before its last byte, earlier versions read up to it), then
// strv_split_newlines, extract_first_word with the separators "\n\r" and
// no flags (systemd 247 and later): runs of '\n' and '\r' separate
// assignments, and a backslash makes the byte after it part of the
// assignment, separators included, and is itself dropped. A backslash at
// the end makes systemd ignore the whole datagram: ok is false.
func assignments(msg []byte) (list []string, ok bool) {
	if i := bytes.IndexByte(msg, 0); i >= 0 {
		msg = msg[:i]
	}
	var word []byte
	inWord, escaped := false, false
	for _, c := range msg {
		switch {
		case escaped:
			word, escaped = append(word, c), false
		case c == '\\':
			inWord, escaped = true, true
		case c == '\n' || c == '\r':
			if inWord {
				list, word, inWord = append(list, string(word)), word[:0], false
			}
		default:
			word, inWord = append(word, c), true
		}
	}
	if escaped {
		return nil, false
	}
	if inWord {
		list = append(list, string(word))
	}
	return list, true
}

// filtered is what the relay makes of a notification's text.
type filtered struct {
	// msg is what to send: the text unchanged when nothing was removed,
	// else the assignments kept joined by '\n'. Empty: nothing is left.
	msg []byte
	// removed names the assignments removed: by their key, and "line
	// break" for one holding a line break.
	removed []string
	pidfd   bool // MAINPIDFD= was removed: the descriptor that goes with it must go too
	// unreadable: systemd would ignore the whole datagram (a backslash
	// at its end); nothing is to be sent.
	unreadable bool
}

// filter removes from msg every assignment systemd would read as one of
// trustKeys, and every assignment holding a line break (only a backslash
// can put one there): systemd before 247 split on every '\n' and '\r',
// escaped or not, and would read the part after it as an assignment of
// its own. It keeps every other assignment, in order. msg itself is kept
// when nothing is removed and it holds no NUL; otherwise the text is made
// anew from what is kept, each backslash doubled, so that systemd reads
// exactly those assignments.
func filter(msg []byte) filtered {
	list, ok := assignments(msg)
	if !ok {
		return filtered{unreadable: true}
	}
	var f filtered
	kept := list[:0]
	for _, a := range list {
		key, _, assigns := strings.Cut(a, "=")
		switch {
		case assigns && slices.Contains(trustKeys, key):
			f.removed = append(f.removed, key)
			f.pidfd = f.pidfd || key == "MAINPIDFD"
		case strings.ContainsAny(a, "\n\r"):
			f.removed = append(f.removed, "line break")
		default:
			kept = append(kept, a)
		}
	}
	if len(f.removed) == 0 && bytes.IndexByte(msg, 0) < 0 {
		f.msg = msg
		return f
	}
	var out []byte
	for i, a := range kept {
		if i > 0 {
			out = append(out, '\n')
		}
		out = append(out, strings.ReplaceAll(a, `\`, `\\`)...)
	}
	f.msg = out
	return f
}

package record

import (
	"fmt"
	"os"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// AppendSummary appends to the Markdown file at path (GitHub Actions'
// $GITHUB_STEP_SUMMARY) a short table of the processes the run's stop
// found besides COMMAND: pid, command line, how each ended and when. It
// writes nothing when there were none. The file must exist and be a
// regular file: it is opened without following a link and without
// blocking, and never created.
func AppendSummary(path string, r Report, now time.Time) error {
	text := summary(r, now)
	if text == "" {
		return nil
	}
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_APPEND|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("cannot write the step summary %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fmt.Errorf("cannot write the step summary %s: not a regular file", path)
	}
	if _, err := f.WriteString(text); err != nil {
		return fmt.Errorf("cannot write the step summary %s: %w", path, err)
	}
	return nil
}

// summary is the Markdown of AppendSummary, "" when COMMAND left nothing.
func summary(r Report, now time.Time) string {
	if r.Teardown == nil {
		return ""
	}
	var rows []DescendantReport
	for _, d := range r.Teardown.Descendants {
		if r.CommandStatus == nil || d.PID != r.CommandStatus.PID {
			rows = append(rows, d)
		}
	}
	if len(rows) == 0 {
		return ""
	}
	var b strings.Builder
	why := "when it exited"
	switch r.Teardown.Reason {
	case "signal":
		why = "stopped on " + r.Teardown.Received
	case "timeout":
		why = "stopped at --timeout"
	}
	noun := "processes"
	if len(rows) == 1 {
		noun = "process"
	}
	fmt.Fprintf(&b, "\n#### reaper: %s left %d %s (%s)\n\n", markdownCell(strings.Join(r.Command, " ")), len(rows), noun, why)
	fmt.Fprintf(&b, "| pid | command | how it ended | gone after |\n|---:|---|---|---:|\n")
	for _, d := range rows {
		gone := "still running"
		if d.GoneMS != nil {
			gone = (time.Duration(*d.GoneMS * float64(time.Millisecond))).Round(time.Millisecond).String()
		}
		fmt.Fprintf(&b, "| %d | %s | %s | %s |\n", d.PID, markdownCell(d.Command), ending(d, r.Teardown), gone)
	}
	fmt.Fprintf(&b, "\nThe stop began %s; times count from there.\n", now.Add(-time.Duration(r.Teardown.TotalMS*float64(time.Millisecond))).UTC().Format(time.RFC3339))
	return b.String()
}

// ending says how d ended, in words.
func ending(d DescendantReport, t *TeardownReport) string {
	switch d.Outcome {
	case Killed:
		return fmt.Sprintf("killed (SIGKILL after the %s grace period)", time.Duration(t.GraceMS*float64(time.Millisecond)))
	case Survived:
		return "survived SIGKILL"
	}
	if d.Signal == "" {
		return "exited"
	}
	return "exited after " + d.Signal
}

// markdownCell renders s, which another process chose, as the text of a
// table cell: what Markdown or HTML would read (| ` * _ [ ] < > & \ and the
// like) is escaped, control characters and invalid UTF-8 are shown as
// escapes, and a long line is cut.
func markdownCell(s string) string {
	const most = 200
	var b strings.Builder
	n := 0
	for i, r := range s {
		if n == most {
			b.WriteString("…")
			break
		}
		n++
		switch {
		case r == utf8.RuneError && invalidAt(s, i):
			fmt.Fprintf(&b, "\\x%02x", s[i])
		case r == '<':
			b.WriteString("&lt;")
		case r == '>':
			b.WriteString("&gt;")
		case r == '&':
			b.WriteString("&amp;")
		case strings.ContainsRune("|`*_[]\\#~!", r):
			b.WriteByte('\\')
			b.WriteRune(r)
		case !unicode.IsPrint(r) && r != ' ':
			fmt.Fprintf(&b, "\\u%04x", r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// invalidAt reports whether s holds an invalid UTF-8 byte at i (not a
// U+FFFD written as such).
func invalidAt(s string, i int) bool {
	_, size := utf8.DecodeRuneInString(s[i:])
	return size == 1
}

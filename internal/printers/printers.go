// Package printers writes drover's state for people: the text forms of
// drover status, history, plan, migrate status and doctor, JSON for -o json,
// and Terminal, the writer that keeps values drover did not write (from
// Redis, the status file, git) from steering the operator's terminal.
//
// Each printer takes what package control (or doctor, migrate, plan)
// returned and only formats it: no I/O but the writer, no clock but the
// times it is given, so the output is tested in-process (printers_test.go)
// and cmd/drover is left with flags and wiring.
package printers

import (
	"encoding/json"
	"io"
	"strings"
	"time"

	"github.com/drover-dev/drover/internal/revid"
)

// JSON writes v indented, as every -o json does.
func JSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// firstLine is s up to its first newline, marked as cut: one table cell or
// line per value, however many lines an error has.
func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}

// short abbreviates a commit id for people.
func short(rev string) string { return revid.Short(rev) }

// dateTime and clock are the two ways times are shown: in the operator's
// zone, to the second.
func dateTime(t time.Time) string { return t.Local().Format(time.DateTime) }
func clock(t time.Time) string    { return t.Local().Format(time.TimeOnly) }

package migrate

import (
	"fmt"
	"slices"
	"strings"
)

// Warning is a statement that breaks the expand/contract discipline: during a
// rollout, workers of the previous revision keep running against the new
// schema until their node switches.
type Warning struct {
	File      string
	Line      int    // line of the destructive keyword
	Statement string // the whole statement
	Message   string // what it does and why it is dangerous
}

func (w Warning) String() string { return fmt.Sprintf("%s:%d: %s", w.File, w.Line, w.Message) }

const rollout = "workers of the previous revision still run against the new schema during the rollout"

// Lint warns about destructive statements: DROP TABLE, ALTER TABLE … DROP
// [COLUMN], ALTER TABLE … RENAME [COLUMN] … / RENAME TO, TRUNCATE, and ALTER
// TABLE … ALTER [COLUMN] … [SET DATA] TYPE. It looks at top-level statements
// only, not inside DO blocks or function bodies. Files that Load would
// refuse are skipped.
func Lint(ms []Migration) []Warning {
	var out []Warning
	for _, m := range ms {
		f, err := split(string(m.SQL))
		if err != nil {
			continue
		}
		for _, s := range f.stmts {
			t := words(s.masked)
			warn := func(at token, format string, args ...any) {
				out = append(out, Warning{File: m.File, Line: f.lineAt(s.start + at.off), Statement: s.text,
					Message: fmt.Sprintf(format, args...)})
			}
			name := func(tk token) string { return s.text[tk.off:tk.end] }
			switch {
			case len(t) >= 2 && t[0].word == "drop" && t[1].word == "table":
				warn(t[0], "DROP TABLE %s: %s and may still use it; stop using it in one revision, drop it in a later one (expand/contract)",
					names(s.text, t[2:], "if", "exists"), rollout)
			case len(t) >= 1 && t[0].word == "truncate":
				warn(t[0], "TRUNCATE %s: deletes every row while %s and still read them; make sure no deployed code needs the rows (expand/contract)",
					names(s.text, t[1:], "table", "only"), rollout)
			case len(t) >= 3 && t[0].word == "alter" && t[1].word == "table":
				i := 2
				if i+1 < len(t) && t[i].word == "if" && t[i+1].word == "exists" {
					i += 2
				}
				if i < len(t) && t[i].word == "only" {
					i++
				}
				if i >= len(t) {
					continue
				}
				table := name(t[i])
				if i += 1; i+1 < len(t) && t[i].word == "." {
					table, i = s.text[t[i-1].off:t[i+1].end], i+2
				}
				if i < len(t) && t[i].word == "*" {
					i++
				}
				for _, a := range actions(t[i:]) {
					lintAction(a, table, name, warn)
				}
			}
		}
	}
	return out
}

// names returns the text of a statement's object list (up to CASCADE,
// RESTRICT or the end), after the optional keywords skip.
func names(text string, t []token, skip ...string) string {
	for len(t) > 0 && slices.Contains(skip, t[0].word) {
		t = t[1:]
	}
	end := 0
	for end < len(t) && t[end].word != ";" && t[end].word != "cascade" && t[end].word != "restrict" {
		end++
	}
	if end == 0 {
		return "?"
	}
	return text[t[0].off:t[end-1].end]
}

// lintAction checks one action of ALTER TABLE table.
func lintAction(a []token, table string, name func(token) string, warn func(token, string, ...any)) {
	at := func(i int) string {
		if i < len(a) {
			return a[i].word
		}
		return ""
	}
	column := func(i int) string { // the column name at i, after optional COLUMN and IF EXISTS
		if at(i) == "column" {
			i++
		}
		if at(i) == "if" && at(i+1) == "exists" {
			i += 2
		}
		if i < len(a) {
			return name(a[i])
		}
		return "?"
	}
	switch at(0) {
	case "drop":
		if at(1) == "constraint" || at(1) == "" {
			return
		}
		warn(a[0], "ALTER TABLE %s DROP COLUMN %s: %s and may still read or write the column; stop using it in one revision, drop it in a later one (expand/contract)",
			table, column(1), rollout)
	case "rename":
		switch at(1) {
		case "constraint", "":
		case "to":
			warn(a[0], "ALTER TABLE %s RENAME TO %s: %s and still use the old name; add the new table alongside (or a view), switch the code, remove the old name later (expand/contract)",
				table, column(2), rollout)
		default:
			warn(a[0], "ALTER TABLE %s RENAME COLUMN %s: %s and still use the old name; add a new column kept in sync, switch the code, drop the old one later (expand/contract)",
				table, column(1), rollout)
		}
	case "alter":
		i := 1
		if at(i) == "column" {
			i++
		}
		if at(i+1) == "type" || at(i+1) == "set" && at(i+2) == "data" && at(i+3) == "type" {
			warn(a[0], "ALTER TABLE %s ALTER COLUMN %s TYPE: %s and may read or write values of the old type; it also rewrites or scans the table under an ACCESS EXCLUSIVE lock; add a new column, backfill it, switch the code, drop the old one later (expand/contract)",
				table, column(1), rollout)
		}
	}
}

// actions splits the tokens after ALTER TABLE name at top-level commas.
func actions(t []token) [][]token {
	var out [][]token
	depth, from := 0, 0
	for i := 0; i <= len(t); i++ {
		switch {
		case i == len(t) || t[i].word == "," && depth == 0:
			if i > from {
				out = append(out, t[from:i])
			}
			from = i + 1
		case t[i].word == "(":
			depth++
		case t[i].word == ")":
			depth--
		}
	}
	return out
}

// token is a word of a masked statement: a lower-cased keyword or
// identifier, a quoted identifier or literal (its masked text), or one
// punctuation character.
type token struct {
	word     string
	off, end int // byte offsets in the statement
}

func words(masked string) []token {
	var out []token
	for i := 0; i < len(masked); {
		c := masked[i]
		j := i + 1
		switch {
		case strings.IndexByte(" \t\n\r\f\v", c) >= 0:
			i++
			continue
		case isIdent(c):
			for j < len(masked) && isIdent(masked[j]) {
				j++
			}
		case c == '"' || c == '\'':
			if k := strings.IndexByte(masked[i+1:], c); k >= 0 {
				j = i + 1 + k + 1
			}
		}
		out = append(out, token{word: strings.ToLower(masked[i:j]), off: i, end: j})
		i = j
	}
	return out
}

package migrate

import (
	"fmt"
	"sort"
	"strings"
	"unicode/utf8"
)

// statement is one SQL statement of a migration file.
type statement struct {
	text   string // from its first token through its terminating ';' (if any)
	start  int    // byte offset of text in the file
	line   int    // 1-based line of start
	masked string // text with comments blanked and the insides of literals masked; same length
}

// sqlFile is a migration file split into statements, with what is needed to
// turn byte offsets back into line numbers.
type sqlFile struct {
	src        string
	stmts      []statement
	lineStarts []int
}

// lineAt returns the 1-based line holding byte offset off.
func (f *sqlFile) lineAt(off int) int {
	return sort.Search(len(f.lineStarts), func(i int) bool { return f.lineStarts[i] > off })
}

// split cuts src into statements the way psql does: at semicolons outside
// quotes ('…', E'…', "…", $tag$…$tag$), comments (-- and nested /* */),
// parentheses, and the BEGIN … END body of CREATE [OR REPLACE]
// FUNCTION/PROCEDURE … BEGIN ATOMIC. It assumes standard_conforming_strings
// (the default since PostgreSQL 9.1): backslashes escape only in E'…'.
// psql meta-commands (\copy, \i …) and COPY … FROM STDIN are not supported.
func split(src string) (*sqlFile, error) {
	f := &sqlFile{src: src, lineStarts: []int{0}}
	for i := 0; i < len(src); i++ {
		if src[i] == '\n' {
			f.lineStarts = append(f.lineStarts, i+1)
		}
	}
	mask := []byte(src)
	blank := func(from, to int, with byte) {
		for k := from; k < to; k++ {
			if mask[k] != '\n' {
				mask[k] = with
			}
		}
	}
	unterminated := func(at int, what string) error {
		return fmt.Errorf("line %d: unterminated %s", f.lineAt(at), what)
	}

	start := -1 // offset of the current statement's first token
	paren, begin := 0, 0
	var lead []string // the statement's leading keywords, for the CREATE FUNCTION … BEGIN ATOMIC rule
	words := 0
	prevWord := ""
	flush := func(end int) {
		if start >= 0 {
			f.stmts = append(f.stmts, statement{text: src[start:end], start: start, line: f.lineAt(start), masked: string(mask[start:end])})
		}
		start, paren, begin, lead, words, prevWord = -1, 0, 0, nil, 0, ""
	}

	i := 0
	for i < len(src) {
		c := src[i]
		switch {
		case c == '-' && i+1 < len(src) && src[i+1] == '-':
			j := strings.IndexByte(src[i:], '\n')
			if j < 0 {
				j = len(src) - i
			}
			blank(i, i+j, ' ')
			i += j
			continue
		case c == '/' && i+1 < len(src) && src[i+1] == '*':
			depth, j := 1, i+2
			for j < len(src) && depth > 0 {
				switch {
				case strings.HasPrefix(src[j:], "/*"):
					depth, j = depth+1, j+2
				case strings.HasPrefix(src[j:], "*/"):
					depth, j = depth-1, j+2
				default:
					j++
				}
			}
			if depth > 0 {
				return nil, unterminated(i, "/* comment")
			}
			blank(i, j, ' ')
			i = j
			continue
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			i++
			continue
		}
		if start < 0 {
			start = i
		}
		switch {
		case c == ';':
			if paren == 0 && begin == 0 {
				flush(i + 1)
			}
			i++
		case c == '(':
			paren++
			i++
		case c == ')':
			if paren > 0 {
				paren--
			}
			i++
		case c == '\'':
			escapes := strings.EqualFold(prevWord, "e") && i > 0 && isIdent(src[i-1])
			j, ok := endQuote(src, i+1, '\'', escapes)
			if !ok {
				return nil, unterminated(i, "quoted string")
			}
			blank(i+1, j-1, ' ')
			i = j
		case c == '"':
			j, ok := endQuote(src, i+1, '"', false)
			if !ok {
				return nil, unterminated(i, "quoted identifier")
			}
			blank(i+1, j-1, '_')
			i = j
		case c == '$' && i+1 < len(src) && !isDigit(src[i+1]):
			tag, ok := dollarTag(src[i:])
			if !ok {
				i++
				break
			}
			k := strings.Index(src[i+len(tag):], tag)
			if k < 0 {
				return nil, unterminated(i, "dollar-quoted string "+tag)
			}
			j := i + len(tag) + k + len(tag)
			blank(i+len(tag), j-len(tag), ' ')
			i = j
		case isIdentStart(c):
			j := i + 1
			for j < len(src) && isIdent(src[j]) {
				j++
			}
			w := strings.ToLower(src[i:j])
			if words < 4 {
				lead = append(lead, w)
			}
			words++
			if paren == 0 && createsRoutine(lead) {
				switch {
				case w == "begin":
					begin++
				case w == "case" && begin > 0:
					begin++
				case w == "end" && begin > 0:
					begin--
				}
			}
			prevWord = w
			i = j
			continue // keep prevWord for an E'…' string right after it
		default:
			i++
		}
		prevWord = ""
	}
	if start >= 0 { // a last statement without a semicolon
		end := len(mask)
		for end > start && strings.IndexByte(" \t\n\r\f\v", mask[end-1]) >= 0 {
			end--
		}
		flush(end)
	}
	return f, nil
}

// createsRoutine reports whether the leading keywords are CREATE [OR REPLACE]
// FUNCTION|PROCEDURE, whose BEGIN ATOMIC … END body may hold semicolons.
func createsRoutine(lead []string) bool {
	isRoutine := func(w string) bool { return w == "function" || w == "procedure" }
	switch {
	case len(lead) < 2 || lead[0] != "create":
		return false
	case isRoutine(lead[1]):
		return true
	default:
		return len(lead) >= 4 && lead[1] == "or" && lead[2] == "replace" && isRoutine(lead[3])
	}
}

// endQuote returns the offset just past the quote closing a literal whose
// contents start at i; a doubled quote is an escaped quote, and so is \' when
// backslash escapes are on.
func endQuote(src string, i int, q byte, backslash bool) (int, bool) {
	for i < len(src) {
		switch c := src[i]; {
		case backslash && c == '\\':
			i += 2
		case c == q && i+1 < len(src) && src[i+1] == q:
			i += 2
		case c == q:
			return i + 1, true
		default:
			i++
		}
	}
	return 0, false
}

// dollarTag returns the opening tag ($$ or $name$) at the start of s.
func dollarTag(s string) (string, bool) {
	for j := 1; j < len(s); j++ {
		c := s[j]
		switch {
		case c == '$':
			return s[:j+1], true
		case j == 1 && !isIdentStart(c), j > 1 && !isIdentStart(c) && !isDigit(c):
			return "", false
		}
	}
	return "", false
}

func isDigit(c byte) bool      { return c >= '0' && c <= '9' }
func isIdentStart(c byte) bool { return c == '_' || c >= 0x80 || (c|0x20) >= 'a' && (c|0x20) <= 'z' }
func isIdent(c byte) bool      { return isIdentStart(c) || isDigit(c) || c == '$' }

// byteOffset converts PostgreSQL's 1-based character position in s (as in
// an ErrorResponse's Position) to a byte offset in s.
func byteOffset(s string, pos int) int {
	off := 0
	for n := 1; n < pos && off < len(s); n++ {
		_, size := utf8.DecodeRuneInString(s[off:])
		off += size
	}
	return off
}

package printers

import (
	"io"
	"unicode"
	"unicode/utf8"
)

// MaxLine bounds one printed line: what status prints comes from Redis
// (node statuses, events, halts), which anything that reaches Redis can
// write.
const MaxLine = 2000

// Terminal returns a writer for terminal output made of values drover did
// not write itself: it drops every control character but newline and tab
// (C0, DEL, C1: an ESC or CSI would let whoever wrote to Redis move the
// cursor, retitle the terminal or hide lines), replaces invalid UTF-8, and
// cuts lines longer than MaxLine. Runes split across writes are kept until
// complete.
func Terminal(w io.Writer) io.Writer { return &terminal{w: w} }

type terminal struct {
	w       io.Writer
	pending []byte // the start of a rune whose end has not been written yet
	line    int    // runes on the current line
	cut     bool   // the current line was cut
}

func (p *terminal) Write(b []byte) (int, error) {
	n := len(b)
	data := append(p.pending, b...)
	p.pending = nil
	out := make([]byte, 0, len(data))
	for len(data) > 0 {
		if !utf8.FullRune(data) {
			p.pending = append([]byte(nil), data...)
			break
		}
		r, size := utf8.DecodeRune(data)
		data = data[size:]
		switch {
		case r == '\n':
			p.line, p.cut = 0, false
			out = append(out, '\n')
			continue
		case r == utf8.RuneError && size == 1:
			r = '\uFFFD'
		case r != '\t' && (unicode.IsControl(r) || r == '\u2028' || r == '\u2029'):
			continue
		}
		if p.line++; p.line > MaxLine {
			if !p.cut {
				out = append(out, "…"...)
				p.cut = true
			}
			continue
		}
		out = utf8.AppendRune(out, r)
	}
	if _, err := p.w.Write(out); err != nil {
		return 0, err
	}
	return n, nil
}

package printers

import (
	"bytes"
	"strings"
	"testing"
)

func TestTerminalStripsControls(t *testing.T) {
	for in, want := range map[string]string{
		"plain\tline\n":                           "plain\tline\n",
		"\x1b]0;pwned\x07title":                   "]0;pwnedtitle",
		"red \x1b[31mtext\x1b[0m":                 "red [31mtext[0m",
		"csi \u009b31m c1":                        "csi 31m c1",
		"cr\roverwrite":                           "croverwrite",
		"del\x7f nul\x00 bs\b":                    "del nul bs",
		"bad \xff utf8":                           "bad \uFFFD utf8",
		"ok é ü 日本":                               "ok é ü 日本",
		"line\u2028sep":                           "linesep",
		strings.Repeat("x", MaxLine+5) + "\nnext": strings.Repeat("x", MaxLine) + "…\nnext",
	} {
		var b bytes.Buffer
		p := Terminal(&b)
		// Byte by byte: runes and sequences split across writes.
		for i := range len(in) {
			if _, err := p.Write([]byte{in[i]}); err != nil {
				t.Fatal(err)
			}
		}
		if b.String() != want {
			t.Errorf("%q printed as %q, want %q", in, b.String(), want)
		}
	}
}

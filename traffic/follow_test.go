package traffic

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type lines []string

func (l *lines) AddLine(b []byte) { *l = append(*l, string(b)) }

func appendFile(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

// The follower hands on complete lines once each: across polls, a line cut
// between two writes, an overlong line dropped whole, a truncated and a
// replaced file read from their start, its own truncation past maxSize.
func TestFollower(t *testing.T) {
	path := filepath.Join(t.TempDir(), "traffic.log")
	var got lines
	f := NewFollower(path, &got, 200)
	if err := f.Poll(); err != nil { // no file yet
		t.Fatal(err)
	}
	appendFile(t, path, "a\nb\nhal")
	f.Poll()
	appendFile(t, path, "f\n"+strings.Repeat("x", MaxLine+10))
	f.Poll()
	appendFile(t, path, "yyy\nc\n")
	f.Poll()
	if want := "a b half c"; strings.Join(got, " ") != want {
		t.Fatalf("lines %q, want %q", got, want)
	}
	// Over maxSize (200): truncated after the read; nginx appends at 0.
	if fi, _ := os.Stat(path); fi.Size() > 6 {
		t.Fatalf("size %d: not truncated after a read past maxSize", fi.Size())
	}
	got = nil
	appendFile(t, path, "d\n")
	f.Poll()
	// Replaced (rotated): the new file from its start.
	os.Rename(path, path+".1")
	appendFile(t, path, "e\n")
	f.Poll()
	if want := "d e"; strings.Join(got, " ") != want {
		t.Fatalf("after truncation and rotation: %q, want %q", got, want)
	}
}

// A follower started on a big existing file reads only its last part,
// from a line's start.
func TestFollowerStartsNearTheEnd(t *testing.T) {
	path := filepath.Join(t.TempDir(), "traffic.log")
	var b strings.Builder
	for i := range 200000 {
		fmt.Fprintf(&b, "line %06d\n", i)
	}
	appendFile(t, path, b.String())
	var got lines
	f := NewFollower(path, &got, 64<<20)
	if err := f.Poll(); err != nil {
		t.Fatal(err)
	}
	if len(got) == 0 || len(got) > lookback/12+1 || got[len(got)-1] != "line 199999" || !strings.HasPrefix(got[0], "line ") || len(got[0]) != 11 {
		t.Fatalf("read %d lines from %q to %q", len(got), got[0], got[len(got)-1])
	}
}

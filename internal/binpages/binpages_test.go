package binpages

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

func TestMappingsOf(t *testing.T) {
	const exe = "/opt/my tools/drover (deleted)"
	maps := `00400000-00bc4000 r-xp 00000000 fd:01 1234                               /opt/my tools/drover (deleted)
00bc4000-01576000 r--p 007c4000 fd:01 1234                               /opt/my tools/drover (deleted)
01576000-0160c000 rw-p 01176000 fd:01 1234                               /opt/my tools/drover (deleted)
0160c000-03652000 rw-p 00000000 00:00 0 
1c7b6e400000-1c7b6ec00000 rw-p 00000000 00:00 0 
7faca2327000-7faca234d000 r--p 00000000 fd:01 99                         /usr/lib/x86_64-linux-gnu/libc.so.6
7faca234d000-7faca24a3000 r-xp 00026000 fd:01 99                         /usr/lib/x86_64-linux-gnu/libc.so.6
7faca2400000-7faca2500000 r--s 00000000 fd:01 1234                       /opt/my tools/drover (deleted)
7faca2600000-7faca2700000 r--p 00000000 fd:01 1234                       /opt/my tools/drover
7ffde4bc4000-7ffde4be5000 rw-p 00000000 00:00 0                          [stack]
`
	got := mappingsOf(maps, exe)
	want := []span{{0x400000, 0xbc4000, false}, {0xbc4000, 0x1576000, false}, {0x1576000, 0x160c000, true}}
	if len(got) != len(want) {
		t.Fatalf("mappingsOf = %+v, want %+v (text, rodata and data: not another file, a shared mapping or another path)", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("mapping %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestReleasePolicy(t *testing.T) {
	const mb = 1 << 20
	p := newReleasePolicy()
	steps := []struct {
		resident int64
		release  bool
		why      string
	}{
		{16 * mb, false, "first check: nothing to compare with"},
		{16*mb + 100<<10, true, "idle (grew 100 KB): first release"},
		// released: 1 MB left
		{5 * mb, false, "refaulting the idle working set"},
		{5*mb + 50<<10, false, "idle: the working set settles here"},
		{6 * mb, false, "grew by less than regrowth"},
		{6*mb + 10<<10, false, "idle, still within regrowth of the settled 5 MB"},
		{9 * mb, false, "a rollout is running code"},
		{9*mb + 10<<10, true, "idle again, 4 MB over the settled size"},
		// released: 1 MB left
		{9 * mb, false, "a rollout right after the release"},
		{12 * mb, false, "still busy"},
	}
	for i, s := range steps {
		if got := p.check(s.resident); got != s.release {
			t.Fatalf("step %d (%s): check(%d) = %v, want %v", i, s.why, s.resident, got, s.release)
		}
		if s.release {
			p.released(1 * mb)
		}
	}
}

// written is a global in the data segment that the test writes before the
// release: releasing a written page of a private mapping would lose it.
var written = []byte("as linked")

// TestReleaseBinaryPages releases the test binary's own pages: its text and
// rodata leave RSS, every mapping of the binary is marked for random access,
// the data segment keeps what was written to it, and the process goes on
// running.
func TestReleaseBinaryPages(t *testing.T) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	copy(written, "rewritten")
	before := exeMappings(t, exe)
	if before.roRss < 1<<20 {
		t.Fatalf("only %d KB of %s's read-only mappings resident before the release; want a test that can fail", before.roRss>>10, exe)
	}
	n, err := releaseBinaryPages()
	if err != nil {
		t.Fatal(err)
	}
	after := exeMappings(t, exe)
	t.Logf("%d mappings released: read-only resident %d KB -> %d KB", n, before.roRss>>10, after.roRss>>10)
	if n != before.ro {
		t.Errorf("released %d mappings, want the %d read-only ones", n, before.ro)
	}
	if after.roRss > before.roRss/2 {
		t.Errorf("read-only mappings of %s: %d KB resident after the release, was %d KB: want at most half", exe, after.roRss>>10, before.roRss>>10)
	}
	if after.rw == 0 || after.roRandom != after.ro || after.rwRandom != after.rw {
		t.Errorf("VmFlags rr (random access) on %d of %d read-only and %d of %d writable mappings of %s, want all", after.roRandom, after.ro, after.rwRandom, after.rw, exe)
	}
	if string(written) != "rewritten" {
		t.Errorf("a global written before the release reads %q after it", written)
	}
}

type exeMaps struct {
	ro, rw             int   // mappings of the executable, read-only and writable
	roRss              int64 // resident bytes of the read-only ones
	roRandom, rwRandom int   // mappings with VM_RAND_READ (VmFlags "rr")
}

// exeMappings reads the mappings of exe from /proc/self/smaps.
func exeMappings(t *testing.T, exe string) exeMaps {
	t.Helper()
	data, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	var m exeMaps
	var cur *int // &m.ro, &m.rw or nil: the mapping the lines below describe
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 5 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":"):
			cur = nil
			if len(f) >= 6 && strings.Join(f[5:], " ") == exe {
				if f[1][1] == 'w' {
					cur = &m.rw
				} else {
					cur = &m.ro
				}
				*cur++
			}
		case cur == nil:
		case f[0] == "Rss:" && cur == &m.ro:
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			m.roRss += kb << 10
		case f[0] == "VmFlags:" && strings.Contains(line, " rr"):
			if cur == &m.ro {
				m.roRandom++
			} else {
				m.rwRandom++
			}
		}
	}
	if m.ro == 0 {
		t.Fatalf("no read-only mapping of %s in /proc/self/smaps", exe)
	}
	return m
}

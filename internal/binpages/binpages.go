// Package binpages releases the agent's share of the drover binary in
// memory when the agent is idle.
//
// drover is one ~19 MB binary (go-git, pgx, go-redis, godo, x/crypto, ...),
// of which ~18 MB are loaded: code (text), read-only data (rodata, pclntab)
// and the data segment. An idle agent uses a fraction of it, but the kernel
// leaves nearly all of it mapped, in the agent's RSS, for as long as the
// agent runs:
//
//   - startup (flags, node.yaml, recovery, the first sync) runs code spread
//     over the whole binary;
//   - a page fault on the file reads ahead a window of it into the page cache
//     (read_ahead_kb: 128 KB to several MB), and "fault-around" then maps the
//     neighbouring pages that are in the page cache, touched or not: 16 pages,
//     or the whole large folio the page is in (a block of up to 2 MB that the
//     page cache keeps and maps as one, where the kernel and filesystem use
//     them: ext4 on this project's 6.18 kernel does).
//
// releaseBinaryPages, on the binary's own private mappings (found in
// /proc/self/maps by the executable's path), asks the kernel for:
//
//   - MADV_RANDOM, on all of them: from now on a fault reads the one page it
//     needs, with no readahead. Alone it changes nothing: fault-around
//     ignores it and still maps the neighbours that are already cached.
//   - MADV_PAGEOUT (Linux 5.4), on the read-only ones (text and rodata):
//     reclaim these pages now. A clean page (or large folio) that only this
//     process maps is unmapped and dropped from the page cache; one that
//     another process maps too is left as it is.
//   - then POSIX_FADV_DONTNEED on the whole file: drop from the page cache
//     the clean pages of the binary that no process maps (read ahead at
//     startup but never mapped, or unmapped just before).
//
// So the memory is freed, not just left out of the count. The pages the
// agent goes on using come back from the file one at a time, and RSS then
// counts those, plus what fault-around finds still cached next to them:
// the large folios that held a page the agent's other threads touched while
// the release ran (the runtime keeps running), which stay whole. The data
// segment, heap and stacks are never released: a written page of a private
// mapping would lose what was written.
//
// The cost is reading the idle working set back from the file after each
// release (~4 MB, 4 KB at a time), and code that runs for the first time
// afterwards (a rollout) is read page by page rather than in readahead
// windows. So releases are rare: once the agent is idle after it starts,
// and again only when the resident pages grew by more than regrowth since
// they settled (a rollout ran code the idle loop does not use).
// DROVER_KEEP_BINARY_PAGES=1 turns all of this off. docs/benchmarks.md has
// the figures with and without it.
package binpages

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// KeepEnv, set to anything but "" or "0", keeps the binary's pages as the
// kernel maps them.
const KeepEnv = "DROVER_KEEP_BINARY_PAGES"

const (
	// pageCheckEvery is how often the agent reads how much of the binary
	// is resident.
	pageCheckEvery = 30 * time.Second
	// idleGrowth: the resident pages grew by less than this since the
	// previous check, so the agent ran no new code meanwhile.
	idleGrowth = 256 << 10
	// regrowth: release again when the resident pages grew by more than
	// this since they settled after the last release.
	regrowth = 2 << 20
)

// ReleaseWhenIdle runs until ctx ends, releasing the binary's
// pages when releasePolicy says so.
func ReleaseWhenIdle(ctx context.Context, log *slog.Logger) {
	if v := os.Getenv(KeepEnv); v != "" && v != "0" {
		log.Debug("keeping the binary's pages", "env", KeepEnv)
		return
	}
	t := time.NewTicker(pageCheckEvery)
	defer t.Stop()
	p := newReleasePolicy()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		before, err := fileResident()
		if err != nil {
			log.Warn("read resident memory; the binary's pages stay as they are", "err", err)
			return
		}
		if !p.check(before) {
			continue
		}
		n, err := releaseBinaryPages()
		if err != nil {
			log.Warn("release the binary's pages; they stay as they are", "err", err)
			return
		}
		after, err := fileResident()
		if err != nil {
			log.Warn("read resident memory; the binary's pages stay as they are", "err", err)
			return
		}
		p.released(after)
		log.Debug("released the binary's pages", "mappings", n,
			"fileResidentMB", fmt.Sprintf("%.1f -> %.1f", float64(before)/1e6, float64(after)/1e6))
	}
}

// releasePolicy decides, from the resident file pages read at each check,
// when to release: at the first check where the agent is idle, then when
// the resident pages grew by more than regrowth since they settled.
type releasePolicy struct {
	prev     int64 // at the previous check; -1 before the first
	settled  int64 // at the first idle check after a release; -1 until then
	releases int
}

func newReleasePolicy() *releasePolicy { return &releasePolicy{prev: -1, settled: -1} }

// check takes the resident bytes now and reports whether to release.
func (p *releasePolicy) check(resident int64) bool {
	idle := p.prev >= 0 && resident-p.prev < idleGrowth
	p.prev = resident
	switch {
	case !idle:
		return false
	case p.releases == 0:
		return true
	case p.settled < 0:
		p.settled = resident
		return false
	default:
		return resident > p.settled+regrowth
	}
}

// released records a release and the resident bytes just after it.
func (p *releasePolicy) released(resident int64) {
	p.releases++
	p.settled = -1
	p.prev = resident
}

// fileResident is the process's resident file-backed (and shmem) memory,
// in bytes: the "shared" field of /proc/self/statm (RssFile + RssShmem).
func fileResident() (int64, error) {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return 0, fmt.Errorf("/proc/self/statm: %q", b)
	}
	pages, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("/proc/self/statm: %q", b)
	}
	return pages * int64(os.Getpagesize()), nil
}

// releaseBinaryPages applies MADV_RANDOM and MADV_PAGEOUT to the read-only
// private mappings of the process's executable, then POSIX_FADV_DONTNEED to
// the executable's file, and returns how many mappings there were.
func releaseBinaryPages() (int, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return 0, err
	}
	// The file itself, even if it was replaced or deleted since it started.
	f, err := os.Open("/proc/self/exe")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return 0, err
	}
	spans := mappingsOf(string(maps), exe)
	var ro []span
	for _, s := range spans {
		// All of them: a fault in the data segment would otherwise read
		// ahead a window of the file (read_ahead_kb, 128 KB to 8 MB), code
		// and rodata included, which fault-around then maps.
		if err := madvise(s, unix.MADV_RANDOM); err != nil {
			return 0, err
		}
		if !s.writable {
			ro = append(ro, s)
		}
	}
	if len(ro) == 0 {
		return 0, fmt.Errorf("no read-only mapping of %s in /proc/self/maps", exe)
	}
	// Twice: the agent's other threads run on while the pages are released,
	// and a page they fault back in from a large folio (a block of pages the
	// page cache keeps and maps as one) that was not released yet maps the
	// whole folio and keeps it cached. The second pass releases those; the
	// pages faulted in after the first pass were read one at a time.
	for range 2 {
		for _, s := range ro {
			if err := madvise(s, unix.MADV_PAGEOUT); err != nil {
				return 0, err
			}
		}
		if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
			return 0, fmt.Errorf("fadvise %s POSIX_FADV_DONTNEED: %w", exe, err)
		}
	}
	return len(ro), nil
}

// madvise gives advice on s. The raw syscall: these addresses are not Go
// memory, so they are never made into a slice.
func madvise(s span, advice int) error {
	if _, _, errno := unix.Syscall(unix.SYS_MADVISE, s.start, s.end-s.start, uintptr(advice)); errno != 0 {
		name := "MADV_PAGEOUT"
		if advice == unix.MADV_RANDOM {
			name = "MADV_RANDOM"
		}
		return fmt.Errorf("madvise %#x-%#x %s: %w", s.start, s.end, name, errno)
	}
	return nil
}

// span is one mapping's address range.
type span struct {
	start, end uintptr
	writable   bool
}

// mappingsOf returns the private mappings of the file path in /proc/PID/maps
// text: the executable's text and rodata (read-only) and its data segment
// (writable).
func mappingsOf(maps, path string) []span {
	var spans []span
	for line := range strings.Lines(maps) {
		line = strings.TrimSuffix(line, "\n")
		// address perms offset dev inode path; the path, which may hold
		// spaces, starts after the padding that follows the inode.
		var f [5]string
		rest := line
		for i := range f {
			f[i], rest, _ = strings.Cut(strings.TrimLeft(rest, " "), " ")
		}
		perms := f[1]
		if strings.TrimLeft(rest, " ") != path || len(perms) != 4 || perms[0] != 'r' || perms[3] != 'p' {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if !ok || errors.Join(err1, err2) != nil || end <= start {
			continue
		}
		spans = append(spans, span{uintptr(start), uintptr(end), perms[1] == 'w'})
	}
	return spans
}

package traffic

import (
	"bytes"
	"errors"
	"io"
	"os"
	"sync"
	"syscall"
	"time"
)

// Follower reads nginx's per-request log file (access_log PATH
// drover_traffic buffer=64k flush=1s) as it grows, the way the drain
// drivers read the health log: by offset, from the start again when the
// file was replaced or truncated. nginx writes it in 64 KiB batches at
// most a second apart, which costs it next to nothing (see
// docs/benchmarks.md: a datagram per request cost it 9% CPU). Once read, a
// file over MaxSize is truncated (nginx appends, so it writes at the new
// end): the lines written between the read and the truncation are lost,
// a few in millions.
type Follower struct {
	path    string
	c       LineAdder
	maxSize int64

	offset  int64
	ino     uint64
	started bool
	partial []byte
	midLine bool

	stop chan struct{}
	wg   sync.WaitGroup
}

// LineAdder takes the lines a Follower reads; *Counter is one.
type LineAdder interface{ AddLine([]byte) }

// MaxSize is the size past which a Follower truncates the file it read.
const MaxSize = 8 << 20

// lookback is how much of an existing file the first poll reads: the last
// minutes, not the file's whole past.
const lookback = 1 << 20

// maxRead bounds one poll; a follower further behind skips to the end.
const maxRead = 4 << 20

// NewFollower returns a follower of path; nothing runs until Start or Poll.
func NewFollower(path string, c LineAdder, maxSize int64) *Follower {
	if maxSize <= 0 {
		maxSize = MaxSize
	}
	return &Follower{path: path, c: c, maxSize: maxSize}
}

// Start polls every interval until Close.
func (f *Follower) Start(every time.Duration) {
	f.stop = make(chan struct{})
	f.wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			_ = f.Poll()
			select {
			case <-f.stop:
				return
			case <-t.C:
			}
		}
	})
}

// Close stops Start's polling.
func (f *Follower) Close() {
	if f.stop != nil {
		close(f.stop)
		f.wg.Wait()
		f.stop = nil
	}
}

// Poll reads what was appended since the last poll.
func (f *Follower) Poll() error {
	file, err := os.Open(f.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil // nginx creates it when it (re)loads a config that logs
	} else if err != nil {
		return err
	}
	defer file.Close()
	fi, err := file.Stat()
	if err != nil {
		return err
	}
	size, ino := fi.Size(), inode(fi)
	switch {
	case !f.started:
		f.started, f.ino = true, ino
		if size > lookback {
			f.offset, f.midLine = size-lookback, true
		}
	case ino != f.ino || size < f.offset:
		f.ino, f.offset, f.partial, f.midLine = ino, 0, nil, false
	}
	if size-f.offset > maxRead {
		f.offset, f.partial, f.midLine = size-maxRead, nil, true
	}
	if size == f.offset {
		return nil
	}
	b, err := io.ReadAll(io.NewSectionReader(file, f.offset, size-f.offset))
	if err != nil {
		return err
	}
	f.offset += int64(len(b))
	f.lines(b)
	if f.offset > f.maxSize {
		if err := os.Truncate(f.path, 0); err != nil {
			return err
		}
		f.offset, f.partial = 0, nil
	}
	return nil
}

// lines hands every complete line of b (after what the last poll left) to
// the counter; an overlong line is dropped whole.
func (f *Follower) lines(b []byte) {
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			if len(f.partial)+len(b) > MaxLine {
				f.partial, f.midLine = nil, true // drop until the next newline
			} else {
				f.partial = append(f.partial, b...)
			}
			return
		}
		line := b[:i]
		b = b[i+1:]
		if f.midLine {
			f.midLine, f.partial = false, nil
			continue
		}
		if len(f.partial) > 0 {
			line = append(f.partial, line...)
			f.partial = nil
		}
		f.c.AddLine(line)
	}
}

func inode(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}

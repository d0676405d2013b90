package gitsource

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp/capability"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp/sideband"
	"github.com/go-git/go-git/v5/storage/filesystem"
)

// Fetch makes rev, with its whole tree, present in the local store: a
// shallow (depth 1) fetch of that one commit, without tags, telling the
// server which commit the store already has so only new objects come. When
// rev is already complete locally it returns at once, without network I/O.
//
// rev is normally what Remote just returned. If the branch has moved on
// since, the server must allow fetching a commit by id, or Fetch fails with
// ErrBranchMoved.
//
// An incremental fetch that fails after reaching the server, or that leaves
// the tree incomplete, is retried once as a fresh shallow clone that
// replaces the store (see the package doc).
func (r *Repo) Fetch(ctx context.Context, rev string) error {
	h, err := parseRev(rev)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.usable(ctx); err != nil {
		return fmt.Errorf("fetch %s: %w", rev, err)
	}
	if r.verified == h {
		return nil
	}
	if complete(r.st, h) == nil {
		r.verified = h
		return nil
	}
	start, before := time.Now(), r.traffic.load()
	packs, loose, err := r.storeSize()
	if err == nil && packs < r.maxPacks && loose < r.maxLoose {
		err = r.fetchInto(ctx, r.st, h, true)
		if err == nil {
			err = complete(r.st, h)
		}
		if err == nil {
			r.verified = h
			r.logFetch("fetched", h, start, before)
			return nil
		}
		var unreachable *remoteError
		if ctx.Err() != nil || errors.As(err, &unreachable) || errors.Is(err, ErrBranchMoved) {
			return fmt.Errorf("fetch %s: %w", rev, err)
		}
		r.log.Warn("incremental fetch failed, cloning afresh", "rev", rev, "err", err)
	} else {
		r.log.Info("compacting the local repository by cloning afresh", "rev", rev, "packs", packs, "loose", loose, "err", err)
	}
	if err := r.reclone(ctx, h); err != nil {
		return fmt.Errorf("fetch %s: clone afresh: %w", rev, err)
	}
	r.verified = h
	r.logFetch("cloned afresh", h, start, before)
	return nil
}

func (r *Repo) logFetch(msg string, h plumbing.Hash, start time.Time, before Traffic) {
	after := r.traffic.load()
	r.log.Info(msg, "rev", h.String(), "took", time.Since(start).Round(time.Millisecond),
		"received", after.Received-before.Received)
}

// storeSize counts the pack files and loose objects in the store: fresh
// clones leave one pack, incremental fetches add loose objects.
func (r *Repo) storeSize() (packs, loose int, err error) {
	objects := filepath.Join(r.cfg.Dir, "objects")
	dirs, err := os.ReadDir(objects)
	if err != nil {
		return 0, 0, err
	}
	for _, d := range dirs {
		if len(d.Name()) != 2 || !d.IsDir() {
			continue
		}
		files, err := os.ReadDir(filepath.Join(objects, d.Name()))
		if err != nil {
			return 0, 0, err
		}
		loose += len(files)
	}
	p, err := r.st.ObjectPacks()
	return len(p), loose, err
}

// remoteError is a failure to reach the server or to list its refs: the
// local store is not at fault, and cloning afresh would not help.
type remoteError struct{ err error }

func (e *remoteError) Error() string { return e.err.Error() }
func (e *remoteError) Unwrap() error { return e.err }

// fetchInto fetches commit h at depth 1 into st. When incremental, it
// sends the store's shallow boundary and the branch's last fetched commit
// as a "have", so the server leaves out the objects st already holds.
func (r *Repo) fetchInto(ctx context.Context, st *filesystem.Storage, h plumbing.Hash, incremental bool) error {
	return r.fetchDepth(ctx, st, h, incremental, 1)
}

// fetchDepth is fetchInto with depth commits of history (verification of
// require: all deepens the store to reach the live revision).
func (r *Repo) fetchDepth(ctx context.Context, st *filesystem.Storage, h plumbing.Hash, incremental bool, depth int) (err error) {
	sess, err := r.session(ctx)
	if err != nil {
		return &remoteError{err}
	}
	defer func() {
		if cerr := sess.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	ar, tip, err := r.branchTip(ctx, sess)
	if err != nil {
		return &remoteError{err}
	}
	if tip != h && !ar.Capabilities.Supports(capability.AllowReachableSHA1InWant) {
		return fmt.Errorf("%w: %s is at %s now", ErrBranchMoved, r.cfg.Branch, tip)
	}
	if !ar.Capabilities.Supports(capability.Shallow) {
		return &remoteError{errors.New("server does not support shallow fetches")}
	}

	req := packp.NewUploadPackRequestFromCapabilities(ar.Capabilities)
	req.Wants = []plumbing.Hash{h}
	req.Depth = packp.DepthCommits(depth)
	if err := req.Capabilities.Set(capability.Shallow); err != nil {
		return err
	}
	if ar.Capabilities.Supports(capability.NoProgress) {
		if err := req.Capabilities.Set(capability.NoProgress); err != nil {
			return err
		}
	}
	if incremental {
		if req.Shallows, err = st.Shallow(); err != nil {
			return fmt.Errorf("read shallow list: %w", err)
		}
		if ref, err := st.Reference(r.branchRef()); err == nil && st.HasEncodedObject(ref.Hash()) == nil {
			req.Haves = []plumbing.Hash{ref.Hash()}
		}
	}
	// A shallow fetch leaves out what the "have" holds only when the pack
	// may be thin (its deltas based on objects the store has). go-git
	// hides the capability from the advertisement but its parser resolves
	// such bases from the store; every git server supports it.
	thin := len(req.Haves) > 0
	if thin {
		if err := req.Capabilities.Set(capability.ThinPack); err != nil {
			return err
		}
	}

	resp, err := sess.UploadPack(ctx, req)
	if err != nil {
		return fmt.Errorf("upload-pack: %w", err)
	}
	defer resp.Close()
	var pack io.Reader = resp
	switch {
	case req.Capabilities.Supports(capability.Sideband64k):
		pack = sideband.NewDemuxer(sideband.Sideband64k, resp)
	case req.Capabilities.Supports(capability.Sideband):
		pack = sideband.NewDemuxer(sideband.Sideband, resp)
	}
	if thin {
		// The few new objects become loose objects; bases come from st.
		p, err := packfile.NewParserWithStorage(packfile.NewScanner(pack), st)
		if err == nil {
			_, err = p.Parse()
		}
		if err != nil {
			return fmt.Errorf("store thin pack: %w", err)
		}
	} else if err := packfile.UpdateObjectStorage(st, pack); err != nil {
		return fmt.Errorf("store pack: %w", err)
	}
	// The boundary is recorded once the objects are in, so it never names
	// a commit the store lacks.
	shallows, err := st.Shallow()
	if err != nil {
		return fmt.Errorf("read shallow list: %w", err)
	}
	if err := st.SetShallow(without(union(shallows, resp.Shallows), resp.Unshallows)); err != nil {
		return fmt.Errorf("write shallow list: %w", err)
	}
	if err := st.SetReference(plumbing.NewHashReference(r.branchRef(), h)); err != nil {
		return fmt.Errorf("update %s: %w", r.branchRef(), err)
	}
	return nil
}

func union(a, b []plumbing.Hash) []plumbing.Hash {
	seen := make(map[plumbing.Hash]bool, len(a)+len(b))
	var out []plumbing.Hash
	for _, h := range append(append([]plumbing.Hash(nil), a...), b...) {
		if !seen[h] {
			seen[h] = true
			out = append(out, h)
		}
	}
	return out
}

// without returns a less the hashes in drop: commits a deepening fetch
// made whole are no longer on the shallow boundary.
func without(a, drop []plumbing.Hash) []plumbing.Hash {
	if len(drop) == 0 {
		return a
	}
	out := a[:0:0]
	for _, h := range a {
		if !slices.Contains(drop, h) {
			out = append(out, h)
		}
	}
	return out
}

// reclone clones h afresh into a sibling directory and, once that holds
// the complete tree, swaps it in by rename. The current store stays in use
// when the clone fails.
func (r *Repo) reclone(ctx context.Context, h plumbing.Hash) error {
	dir, tmp, old := r.cfg.Dir, cloneDir(r.cfg.Dir), oldDir(r.cfg.Dir)
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	st, err := openStorage(tmp, r.cfg.Branch)
	if err != nil {
		return err
	}
	err = r.fetchInto(ctx, st, h, false)
	if err == nil {
		err = complete(st, h)
	}
	if cerr := st.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.RemoveAll(tmp)
		return err
	}
	// Swap: the store is rebuilt from the remote if a crash leaves no Dir.
	r.verified = plumbing.ZeroHash
	if r.st != nil {
		r.st.Close()
	}
	if err := os.Rename(dir, old); err != nil {
		os.RemoveAll(tmp)
		r.reopen()
		return fmt.Errorf("swap in new clone: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		os.Rename(old, dir)
		r.reopen()
		return fmt.Errorf("swap in new clone: %w", err)
	}
	if err := os.RemoveAll(old); err != nil {
		r.log.Warn("remove old repository", "dir", old, "err", err)
	}
	return r.reopen()
}

// reopen opens the store in Dir again after a swap; on failure the Repo
// stays unusable (r.st nil) until the next successful re-clone.
func (r *Repo) reopen() error {
	st, err := openStorage(r.cfg.Dir, r.cfg.Branch)
	if err != nil {
		r.st = nil
		return err
	}
	r.st = st
	return nil
}

// complete checks that commit h and every object of its tree are in st.
// It reports ErrNotFetched when the commit itself is missing.
func complete(st *filesystem.Storage, h plumbing.Hash) error {
	c, err := object.GetCommit(st, h)
	if errors.Is(err, plumbing.ErrObjectNotFound) {
		return ErrNotFetched
	}
	if err != nil {
		return fmt.Errorf("read commit %s: %w", h, err)
	}
	seen := map[plumbing.Hash]bool{}
	var walk func(h plumbing.Hash, path string) error
	walk = func(h plumbing.Hash, path string) error {
		if seen[h] {
			return nil
		}
		seen[h] = true
		t, err := object.GetTree(st, h)
		if err != nil {
			return fmt.Errorf("tree %q (%s) incomplete: %w", path, h, err)
		}
		for _, e := range t.Entries {
			switch e.Mode {
			case filemode.Dir:
				if err := walk(e.Hash, joinPath(path, e.Name)); err != nil {
					return err
				}
			case filemode.Submodule:
			default:
				if err := st.HasEncodedObject(e.Hash); err != nil {
					return fmt.Errorf("tree incomplete: %s (%s): %w", joinPath(path, e.Name), e.Hash, err)
				}
			}
		}
		return nil
	}
	return walk(c.TreeHash, "")
}

func joinPath(dir, name string) string {
	if dir == "" || dir == "." {
		return name
	}
	return dir + "/" + name
}

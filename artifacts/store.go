// Package artifacts is drover's release store: it puts each revision of the
// config repo on the node as a release directory, and publishes one release as
// the live one with an atomic symlink swap.
//
// # Layout (the contract)
//
// Under the state directory S given to Open:
//
//	S/releases/<rev>/                        one release per revision (rev: 40 lowercase hex digits)
//	S/releases/<rev>/drover.yaml             the spec of that revision, to re-render from on rollback
//	S/releases/<rev>/sites/<site>/           a site's files
//	S/releases/<rev>/workers/<worker>/       a worker's bundle, after its install step
//	S/releases/<rev>/.drover-manifest.json.gz  every file: path, content id, mode, size, mtime
//	S/releases/<rev>/.drover-complete        written last; without it the release does not exist
//	S/current  -> releases/<rev>             the live release (relative symlink)
//	S/previous -> releases/<rev>             the release that current replaced
//	S/cache/<sha256>                         downloaded tarballs, verified against their pin
//	S/trash/                                 releases moved aside, deleted by Prune
//
// nginx roots and systemd WorkingDirectory point through S/current, so Switch
// changes every site and bundle at once: S/current is replaced by rename(2),
// and a reader sees the old release or the new one, never a missing link. A
// worker resolves S/current when it starts, so one left running across a
// Switch (its bundle did not change) runs from the release it started in;
// Prune keeps such releases (SetInUse).
//
// # Guarantees
//
//   - Complete or absent: a release becomes complete only once all its files
//     are written, its install steps succeeded and the filesystem was synced.
//     Switch refuses an incomplete release; Prepare moves a leftover incomplete
//     directory (a crash) aside and rebuilds it. Prepare never touches the live
//     release, so a refused input leaves the node serving what it served.
//   - Sharing: a file whose content and mode are unchanged from the base
//     release (the current one, else the newest complete one) is hard-linked
//     from it instead of copied. The content is known from fsys's ContentID
//     (the git blob id) when it has one, else from a SHA-256 of the file.
//     Hence nothing may modify a release's files in place: nginx only reads
//     sites, and worker bundles that have an install step are copied, never
//     linked file by file, because package managers rewrite files such as
//     package.json or lock files in place — unless the base release has the
//     same bundle (same files, same install argv): then its whole installed
//     bundle is linked and the step does not run again, so an unchanged
//     worker keeps its very files and need not restart. Workers keep mutable state in
//     their data dirs, not their bundle; a file found changed in place (its
//     size or mtime no longer match the manifest) is copied, not linked.
//   - Modes follow git: files are 0644, or 0755 when the source has any
//     execute bit; directories are 0755. A file linked from the base release
//     keeps its mtime (nginx's ETag and Last-Modified stay); new content gets
//     the time it was written.
//   - Symlinks are recreated only when spec.CheckLink accepts them relative
//     to the config root (and, so that they resolve to the same file in the
//     release, relative to the site's or worker's own directory), or relative
//     to the extraction root for tarballs. Devices, fifos and sockets are
//     refused.
//   - Tarballs are pinned by SHA-256: a download whose digest differs is
//     refused before anything is extracted. Extraction refuses absolute
//     paths, "..", entries reached through a symlink, hard links leaving the
//     archive, device and fifo entries, and archives over the size limits.
//   - One process owns S: Open takes an exclusive lock on S/.lock, released by
//     Close or by the process's exit.
package artifacts

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/drover-dev/drover/internal/atomicfile"
	"github.com/drover-dev/drover/internal/layout"
	"golang.org/x/sys/unix"
)

// Options configures a Store. Zero values take the defaults below.
type Options struct {
	// HTTPClient downloads tarballs; default: a client with a 10-minute
	// timeout (ctx bounds each download too).
	HTTPClient *http.Client
	// MaxTarballBytes bounds a download; default 1 GiB.
	MaxTarballBytes int64
	// MaxExtractedBytes bounds the file contents of one tarball; default 4 GiB.
	MaxExtractedBytes int64
	// MaxFiles bounds the entries of one tarball, and the directories it
	// implies; default 200,000.
	MaxFiles int
	// MaxInstallFileBytes bounds each file an install step writes
	// (RLIMIT_FSIZE; the step is killed by SIGXFSZ past it); default 1 GiB.
	MaxInstallFileBytes int64
	// ArtifactSchemes are the URL schemes tarballs may be fetched over
	// (https, http): the node policy's (spec.Policy); default https only.
	ArtifactSchemes []string
	// PrepareTimeout bounds one Prepare (downloads, extraction, install
	// steps together); default 30 minutes. Each install step has its own
	// installTimeout within it.
	PrepareTimeout time.Duration
	// Log receives one line per prepared release and per notable event.
	Log *slog.Logger
}

// Defaults of Options.
const (
	DefaultMaxTarballBytes   = 1 << 30
	DefaultMaxExtractedBytes = 4 << 30
	DefaultMaxFiles          = 200_000
	DefaultPrepareTimeout    = 30 * time.Minute
	DefaultMaxInstallFile    = 1 << 30
)

// Names inside the state directory and inside a release (the contract's
// paths are package layout's).
const (
	markerFile   = ".drover-complete"
	manifestFile = ".drover-manifest.json.gz"
	lockFile     = ".lock"
)

// Store is the release store of one state directory.
type Store struct {
	dir  string
	opts Options
	log  *slog.Logger
	lock *os.File

	// prep admits one Prepare at a time.
	prep chan struct{}

	// mu orders Switch and Prune, and guards busy: paths under dir (such
	// as "releases/<rev>", "cache/<sha256>") that a running Prepare builds
	// or reads, which Prune must leave alone.
	mu   sync.Mutex
	busy map[string]int
	// inUse lists release directories that running workers started in.
	inUse func() []string
	// installUnits runs install steps in transient systemd units (see
	// RunInstallsInUnits); guarded by mu.
	installUnits bool
}

// Release is a complete release on disk.
type Release struct {
	Rev string
	// Dir is S/releases/<rev>.
	Dir string
	// Completed is when the release became complete.
	Completed time.Time
}

// SiteDir is where the files of site name are in this release.
func (r *Release) SiteDir(name string) string { return layout.SiteDir(r.Dir, name) }

// WorkerDir is the bundle directory of worker name in this release.
func (r *Release) WorkerDir(name string) string { return layout.WorkerDir(r.Dir, name) }

// SpecFile is the drover.yaml that this release was prepared from.
func (r *Release) SpecFile() string { return layout.SpecFile(r.Dir) }

// MigrationsDir is where the release keeps the spec's migrations dir.
func (r *Release) MigrationsDir() string { return layout.MigrationsDir(r.Dir) }

// Open opens (creating it if needed) the release store in stateDir and
// takes its lock; another Open of the same directory fails until Close.
func Open(stateDir string, opts Options) (*Store, error) {
	dir, err := filepath.Abs(stateDir)
	if err != nil {
		return nil, fmt.Errorf("open release store %s: %w", stateDir, err)
	}
	if opts.MaxInstallFileBytes <= 0 {
		opts.MaxInstallFileBytes = DefaultMaxInstallFile
	}
	if len(opts.ArtifactSchemes) == 0 {
		opts.ArtifactSchemes = []string{"https"}
	}
	if opts.HTTPClient == nil {
		schemes := opts.ArtifactSchemes
		opts.HTTPClient = &http.Client{Timeout: 10 * time.Minute, CheckRedirect: func(req *http.Request, via []*http.Request) error {
			// A redirect may not leave the node's schemes (https to http).
			if !slices.Contains(schemes, req.URL.Scheme) {
				return fmt.Errorf("redirected to %s, a scheme this node does not fetch over", req.URL.Redacted())
			}
			if len(via) >= 10 {
				return errors.New("stopped after 10 redirects")
			}
			return nil
		}}
	}
	if opts.MaxTarballBytes <= 0 {
		opts.MaxTarballBytes = DefaultMaxTarballBytes
	}
	if opts.MaxExtractedBytes <= 0 {
		opts.MaxExtractedBytes = DefaultMaxExtractedBytes
	}
	if opts.MaxFiles <= 0 {
		opts.MaxFiles = DefaultMaxFiles
	}
	if opts.PrepareTimeout <= 0 {
		opts.PrepareTimeout = DefaultPrepareTimeout
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	for _, d := range []string{dir, layout.New(dir).Releases(), filepath.Join(dir, "cache"), filepath.Join(dir, "trash")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("open release store: %w", err)
		}
		if d != dir {
			// nginx and the install steps' users traverse releases/ to
			// what they serve and build, but list nothing: a revision
			// they were not given is not theirs to find. The cache and
			// the trash are drover's alone.
			mode := fs.FileMode(0o700)
			if d == layout.New(dir).Releases() {
				mode = 0o711
			}
			if err := os.Chmod(d, mode); err != nil {
				return nil, fmt.Errorf("open release store: %w", err)
			}
		}
	}
	lock, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open release store: %w", err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("open release store %s: another drover process holds %s", dir, lock.Name())
		}
		return nil, fmt.Errorf("open release store: lock %s: %w", lock.Name(), err)
	}
	return &Store{
		dir:  dir,
		opts: opts,
		log:  log,
		lock: lock,
		prep: make(chan struct{}, 1),
		busy: map[string]int{},
	}, nil
}

// Close releases the store's lock. A Prepare still running must have
// returned first.
func (s *Store) Close() error {
	if err := s.lock.Close(); err != nil {
		return fmt.Errorf("close release store %s: %w", s.dir, err)
	}
	return nil
}

// Dir is the state directory.
func (s *Store) Dir() string { return s.dir }

// ReleaseDir is S/releases/<rev>, whether or not it exists.
func (s *Store) ReleaseDir(rev string) string { return layout.New(s.dir).Release(rev) }

// LiveDir is S/current: paths through it follow every Switch.
func (s *Store) LiveDir() string { return layout.New(s.dir).Current() }

// LiveSiteDir is S/current/sites/<name>: the root nginx serves a site from.
func (s *Store) LiveSiteDir(name string) string { return layout.SiteDir(s.LiveDir(), name) }

// LiveWorkerDir is S/current/workers/<name>: a worker's WorkingDirectory.
func (s *Store) LiveWorkerDir(name string) string {
	return layout.WorkerDir(s.LiveDir(), name)
}

var revRE = regexp.MustCompile(`^[0-9a-f]{40}$`)

// checkRev refuses anything but a full commit id, which also keeps rev
// from naming a path outside S/releases.
func checkRev(rev string) error {
	if !revRE.MatchString(rev) {
		return fmt.Errorf("revision %q is not a commit id (40 lowercase hex digits)", rev)
	}
	return nil
}

// marker is the content of .drover-complete.
type marker struct {
	Rev       string    `json:"rev"`
	Completed time.Time `json:"completed"`
	// Manifest is the SHA-256 of .drover-manifest.json.gz.
	Manifest string `json:"manifest"`
	// Artifacts are the digests of the tarballs the release came from,
	// which Prune keeps in the cache.
	Artifacts []string `json:"artifacts,omitempty"`
}

// readMarker returns the marker of a complete release; an error wrapping
// fs.ErrNotExist when the release is absent or incomplete.
func (s *Store) readMarker(rev string) (*marker, error) {
	file := filepath.Join(s.ReleaseDir(rev), markerFile)
	data, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("release %s is not prepared (no %s): %w", rev, file, fs.ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", file, err)
	}
	var m marker
	if err := json.Unmarshal(data, &m); err != nil || m.Rev != rev {
		return nil, fmt.Errorf("%s is corrupt: the release is incomplete: %w", file, fs.ErrNotExist)
	}
	return &m, nil
}

// Release returns the complete release of rev; the error wraps
// fs.ErrNotExist when rev was never prepared or is incomplete.
func (s *Store) Release(rev string) (*Release, error) {
	if err := checkRev(rev); err != nil {
		return nil, err
	}
	m, err := s.readMarker(rev)
	if err != nil {
		return nil, err
	}
	return &Release{Rev: rev, Dir: s.ReleaseDir(rev), Completed: m.Completed}, nil
}

// Current is the revision of the live release, "" when there is none.
func (s *Store) Current() (string, error) { return s.readLink(layout.CurrentLink) }

// Previous is the revision that the last Switch replaced, "" when none:
// the release a rollback goes back to.
func (s *Store) Previous() (string, error) { return s.readLink(layout.PreviousLink) }

func (s *Store) readLink(name string) (string, error) {
	p := filepath.Join(s.dir, name)
	target, err := os.Readlink(p)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read %s: %w", p, err)
	}
	rev, ok := strings.CutPrefix(target, layout.ReleasesDir+"/")
	if !ok || checkRev(rev) != nil {
		return "", fmt.Errorf("%s points at %q, which is not a release", p, target)
	}
	return rev, nil
}

// Switch makes rev the live release: S/current is replaced atomically by a
// link to releases/<rev>, and S/previous remembers the release it replaced.
// It refuses a release that is not complete. Switching to the live release
// does nothing.
func (s *Store) Switch(rev string) error {
	if err := checkRev(rev); err != nil {
		return fmt.Errorf("switch: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.readMarker(rev); err != nil {
		return fmt.Errorf("switch to %s: %w", rev, err)
	}
	cur, err := s.Current()
	if err != nil {
		return fmt.Errorf("switch to %s: %w", rev, err)
	}
	if cur == rev {
		return nil
	}
	if cur != "" {
		if err := s.replaceLink(layout.PreviousLink, cur); err != nil {
			return fmt.Errorf("switch to %s: %w", rev, err)
		}
	}
	if err := s.replaceLink(layout.CurrentLink, rev); err != nil {
		return fmt.Errorf("switch to %s: %w", rev, err)
	}
	s.log.Info("switched live release", "rev", rev, "from", cur)
	return nil
}

// replaceLink points S/name at releases/rev: a new link beside it, synced,
// renamed over it, and the directory synced so the rename survives a crash.
func (s *Store) replaceLink(name, rev string) error {
	tmp := filepath.Join(s.dir, "."+name+".tmp")
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.Symlink(layout.ReleasesDir+"/"+rev, tmp); err != nil {
		return err
	}
	if err := atomicfile.SyncDir(s.dir); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(s.dir, name)); err != nil {
		return err
	}
	return atomicfile.SyncDir(s.dir)
}

// Releases lists the complete releases, newest first (by completion time).
func (s *Store) Releases() ([]string, error) {
	rs, err := s.complete()
	if err != nil {
		return nil, err
	}
	revs := make([]string, len(rs))
	for i, r := range rs {
		revs[i] = r.rev
	}
	return revs, nil
}

type completeRelease struct {
	rev string
	m   *marker
}

func (s *Store) complete() ([]completeRelease, error) {
	dir := layout.New(s.dir).Releases()
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list releases: %w", err)
	}
	var rs []completeRelease
	for _, de := range des {
		if !de.IsDir() || checkRev(de.Name()) != nil {
			continue
		}
		m, err := s.readMarker(de.Name())
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list releases: %w", err)
		}
		rs = append(rs, completeRelease{de.Name(), m})
	}
	slices.SortFunc(rs, func(a, b completeRelease) int {
		if c := b.m.Completed.Compare(a.m.Completed); c != 0 {
			return c
		}
		return cmp.Compare(a.rev, b.rev)
	})
	return rs, nil
}

// SetInUse tells Prune which releases are still in use outside the store:
// inUse lists directories (S/releases/<rev>, through any symlink) that
// running workers started in and may still run from, because a worker left
// running across Switches keeps the release directory it started in. It is
// called during Prune, with the store's lock held: it must be quick and must
// not call the Store.
func (s *Store) SetInUse(inUse func() []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inUse = inUse
}

// Prune keeps the newest keep complete releases, the live one, the one it
// replaced, the ones in use (SetInUse) and any a running Prepare uses; it
// moves every other release
// (and leftovers of crashed Prepares) into S/trash, then deletes the trash
// and the cached tarballs no kept release came from. Call it after a Switch,
// not before a Prepare: mass deletes slow down file creation for a while on
// some filesystems.
func (s *Store) Prune(ctx context.Context, keep int) error {
	if keep < 0 {
		return fmt.Errorf("prune: keep %d is negative", keep)
	}
	if err := s.moveOldAside(keep); err != nil {
		return err
	}
	return s.emptyTrash(ctx)
}

func (s *Store) moveOldAside(keep int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	rs, err := s.complete()
	if err != nil {
		return fmt.Errorf("prune: %w", err)
	}
	cur, err := s.Current()
	if err != nil {
		return fmt.Errorf("prune: %w", err)
	}
	prev, err := s.Previous()
	if err != nil {
		return fmt.Errorf("prune: %w", err)
	}
	kept := map[string]bool{cur: true, prev: true}
	inUse := s.releasesInUse()
	digests := map[string]bool{}
	for i, r := range rs {
		if i >= keep && !kept[r.rev] && inUse[r.rev] {
			s.log.Info("keeping a release that workers still run from", "rev", r.rev)
		}
		if i < keep || kept[r.rev] || inUse[r.rev] || s.busy["releases/"+r.rev] > 0 {
			kept[r.rev] = true
			for _, d := range r.m.Artifacts {
				digests[d] = true
			}
		}
	}
	var errs []error
	des, err := os.ReadDir(layout.New(s.dir).Releases())
	if err != nil {
		return fmt.Errorf("prune: %w", err)
	}
	for _, de := range des {
		rev := de.Name()
		if checkRev(rev) != nil || kept[rev] || inUse[rev] || s.busy["releases/"+rev] > 0 {
			continue
		}
		if err := s.moveAside(s.ReleaseDir(rev)); err != nil {
			errs = append(errs, err)
		} else {
			s.log.Info("pruned release", "rev", rev)
		}
	}
	des, err = os.ReadDir(filepath.Join(s.dir, "cache"))
	if err != nil {
		return fmt.Errorf("prune: %w", err)
	}
	for _, de := range des {
		d := strings.TrimSuffix(de.Name(), ".part")
		if digests[d] || s.busy["cache/"+d] > 0 {
			continue
		}
		p := filepath.Join(s.dir, "cache", de.Name())
		if err := os.Remove(p); err != nil {
			errs = append(errs, fmt.Errorf("prune %s: %w", p, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("prune: %w", err)
	}
	return nil
}

// releasesInUse is the revisions of the directories inUse lists that are
// releases of this store: S/releases/<rev>, compared by file identity so
// that a path through a symlink to S counts too.
func (s *Store) releasesInUse() map[string]bool {
	if s.inUse == nil {
		return nil
	}
	releases := layout.New(s.dir).Releases()
	rfi, err := os.Stat(releases)
	if err != nil {
		return nil
	}
	revs := map[string]bool{}
	for _, d := range s.inUse() {
		d = filepath.Clean(d)
		rev := filepath.Base(d)
		if checkRev(rev) != nil {
			continue
		}
		parent := filepath.Dir(d)
		if parent != releases {
			fi, err := os.Stat(parent)
			if err != nil || !os.SameFile(fi, rfi) {
				continue
			}
		}
		revs[rev] = true
	}
	return revs
}

// moveAside renames a directory into S/trash under a unique name.
func (s *Store) moveAside(dir string) error {
	dst := filepath.Join(s.dir, "trash", filepath.Base(dir)+"."+strconv.FormatInt(time.Now().UnixNano(), 36))
	if err := os.Rename(dir, dst); err != nil {
		return fmt.Errorf("move %s aside: %w", dir, err)
	}
	return nil
}

func (s *Store) emptyTrash(ctx context.Context) error {
	trash := filepath.Join(s.dir, "trash")
	des, err := os.ReadDir(trash)
	if err != nil {
		return fmt.Errorf("prune: %w", err)
	}
	for _, de := range des {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("prune: %w", err)
		}
		p := filepath.Join(trash, de.Name())
		if err := os.RemoveAll(p); err != nil {
			return fmt.Errorf("prune: remove %s: %w", p, err)
		}
	}
	return nil
}

// use marks paths under S as in use by a Prepare until the returned func runs.
func (s *Store) use(paths ...string) func() {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.useLocked(paths...)
}

// useLocked is use for a caller that holds s.mu.
func (s *Store) useLocked(paths ...string) func() {
	for _, p := range paths {
		s.busy[p]++
	}
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, p := range paths {
			if s.busy[p]--; s.busy[p] <= 0 {
				delete(s.busy, p)
			}
		}
	}
}

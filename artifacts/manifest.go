package artifacts

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/drover-dev/drover/internal/layout"
)

// manifest lists everything a release holds, so the next release can tell
// which files it may share with this one.
type manifest struct {
	Version int    `json:"version"`
	Rev     string `json:"rev"`
	Trees   []tree `json:"trees"`
}

const manifestVersion = 1

// tree is one site or worker directory of a release.
type tree struct {
	// Dir is the tree's path in the release: sites/<name> or workers/<name>.
	Dir string `json:"dir"`
	// Source is the repo directory the tree came from, or Artifact the
	// SHA-256 of its tarball and Strip the components stripped from it.
	Source   string `json:"source,omitempty"`
	Artifact string `json:"artifact,omitempty"`
	Strip    int    `json:"strip,omitempty"`
	// Installed trees ran an install step: their files may differ from
	// Entries, and no file is linked from them one by one. Install is the
	// step's argv: a later release whose tree has the same Entries and the
	// same Install reuses the whole installed tree (see reuseInstalled).
	Installed bool     `json:"installed,omitempty"`
	Install   []string `json:"install,omitempty"`
	Entries   []entry  `json:"entries"`
}

// Entry kinds.
const (
	kindFile    = "f"
	kindDir     = "d"
	kindSymlink = "l"
)

// entry is one file, directory or symlink of a tree.
type entry struct {
	// Path is slash-separated and relative to the tree.
	Path string `json:"p"`
	Kind string `json:"k"`
	// Mode is the permission bits of a file.
	Mode fs.FileMode `json:"m,omitempty"`
	// CID is the file's content id from the config FS (the git blob id),
	// when it has them; Sum is the hex SHA-256 of the content.
	CID string `json:"cid,omitempty"`
	Sum string `json:"sum,omitempty"`
	// Size and MTime (Unix nanoseconds) are the file's as written; a file
	// whose size or mtime differ was modified in place and is not shared.
	Size  int64 `json:"s,omitempty"`
	MTime int64 `json:"t,omitempty"`
	// Target is a symlink's target.
	Target string `json:"l,omitempty"`
}

// writeManifest writes m into dir, synced, and returns the file's SHA-256.
func writeManifest(dir string, m *manifest) (string, error) {
	for i := range m.Trees {
		slices.SortFunc(m.Trees[i].Entries, func(a, b entry) int { return strings.Compare(a.Path, b.Path) })
	}
	file := filepath.Join(dir, manifestFile)
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return "", fmt.Errorf("write manifest: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	zw, _ := gzip.NewWriterLevel(io.MultiWriter(f, h), gzip.BestSpeed)
	if err := json.NewEncoder(zw).Encode(m); err != nil {
		return "", fmt.Errorf("write %s: %w", file, err)
	}
	if err := zw.Close(); err != nil {
		return "", fmt.Errorf("write %s: %w", file, err)
	}
	if err := f.Sync(); err != nil {
		return "", fmt.Errorf("write %s: %w", file, err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("write %s: %w", file, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// readManifest reads the manifest of a complete release and checks it
// against the digest its marker recorded.
func readManifest(dir, digest string) (*manifest, error) {
	file := filepath.Join(dir, manifestFile)
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != digest {
		return nil, fmt.Errorf("read %s: digest does not match %s", file, markerFile)
	}
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", file, err)
	}
	var m manifest
	if err := json.NewDecoder(zr).Decode(&m); err != nil {
		return nil, fmt.Errorf("read %s: %w", file, err)
	}
	if m.Version != manifestVersion {
		return nil, fmt.Errorf("read %s: version %d, want %d", file, m.Version, manifestVersion)
	}
	return &m, nil
}

// linkIndex finds, in the base release, a file with given content and mode.
type linkIndex struct {
	dir   string
	files map[string]candidate // by contentKey
	// at holds every file by its OS path relative to dir, so that a file
	// is linked from the same path when that copy has the content: two
	// trees holding identical files (two workers' server.js) each keep
	// their own inode, and so their bundle's identity (units.bundleID).
	at    map[string]candidate
	trees map[string]*tree // by tree Dir
	// installed are the installed trees, by Dir.
	installed map[string]*tree
	// allCID is true when every file of the base has a content id, so
	// that a file whose id is not found need not be hashed to be sure.
	allCID bool
}

type candidate struct {
	path     string // OS path relative to dir
	mode     fs.FileMode
	size     int64
	mtime    int64
	cid, sum string
}

func newLinkIndex(dir string, m *manifest) *linkIndex {
	ix := &linkIndex{dir: dir, files: map[string]candidate{}, at: map[string]candidate{}, trees: map[string]*tree{}, installed: map[string]*tree{}, allCID: true}
	for i := range m.Trees {
		t := &m.Trees[i]
		if t.Installed {
			ix.installed[t.Dir] = t
			continue
		}
		ix.trees[t.Dir] = t
		for _, e := range t.Entries {
			if e.Kind != kindFile {
				continue
			}
			c := candidate{
				path:  filepath.Join(filepath.FromSlash(t.Dir), filepath.FromSlash(e.Path)),
				mode:  e.Mode,
				size:  e.Size,
				mtime: e.MTime,
				cid:   e.CID,
				sum:   e.Sum,
			}
			ix.at[c.path] = c
			if e.CID != "" {
				ix.files[contentKey("cid", e.CID, e.Mode)] = c
			} else {
				ix.allCID = false
			}
			if e.Sum != "" {
				ix.files[contentKey("sha256", e.Sum, e.Mode)] = c
			}
		}
	}
	return ix
}

// contentKey names content of one kind ("cid" or "sha256") with a mode.
func contentKey(kind, id string, mode fs.FileMode) string {
	return fmt.Sprintf("%s:%s:%o", kind, id, mode)
}

// lookup returns the path of an unchanged copy of key in the base release,
// after checking that it was not modified since it was written: the file
// at the OS path at (relative to the release) when it has that content and
// is unchanged, else any file that has.
func (ix *linkIndex) lookup(key, at string) (string, candidate, bool) {
	if ix == nil {
		return "", candidate{}, false
	}
	if c, ok := ix.at[at]; ok && (key == contentKey("cid", c.cid, c.mode) || key == contentKey("sha256", c.sum, c.mode)) {
		if p, ok := ix.unchanged(c); ok {
			return p, c, true
		}
	}
	if c, ok := ix.files[key]; ok {
		if p, ok := ix.unchanged(c); ok {
			return p, c, true
		}
	}
	return "", candidate{}, false
}

// unchanged returns c's path when the file is as the manifest says.
func (ix *linkIndex) unchanged(c candidate) (string, bool) {
	p := filepath.Join(ix.dir, c.path)
	fi, err := os.Lstat(p)
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != c.mode || fi.Size() != c.size || fi.ModTime().UnixNano() != c.mtime {
		return "", false
	}
	return p, true
}

// SourceIDs reads what each site and worker tree of the complete release
// rev in stateDir was made from, without opening the store (whose lock a
// running agent holds): by tree ("sites/blog"), each file's slash path maps
// to "<content id> <permission bits in octal>" and each symlink's to
// "-> <target>". The content id is the config FS's (the git blob id) when it
// had them, else the SHA-256. `drover plan` compares them with the next
// revision's tree.
func SourceIDs(stateDir, rev string) (map[string]map[string]string, error) {
	if err := checkRev(rev); err != nil {
		return nil, err
	}
	dir := layout.New(stateDir).Release(rev)
	data, err := os.ReadFile(filepath.Join(dir, markerFile))
	if err != nil {
		return nil, fmt.Errorf("release %s: %w", rev, err)
	}
	var mk marker
	if err := json.Unmarshal(data, &mk); err != nil || mk.Rev != rev {
		return nil, fmt.Errorf("release %s: corrupt %s", rev, markerFile)
	}
	m, err := readManifest(dir, mk.Manifest)
	if err != nil {
		return nil, err
	}
	ids := map[string]map[string]string{}
	for _, t := range m.Trees {
		files := map[string]string{}
		for _, e := range t.Entries {
			switch e.Kind {
			case kindFile:
				id := e.CID
				if id == "" {
					id = e.Sum
				}
				files[e.Path] = fmt.Sprintf("%s %o", id, e.Mode.Perm())
			case kindSymlink:
				files[e.Path] = "-> " + e.Target
			}
		}
		ids[t.Dir] = files
	}
	return ids, nil
}

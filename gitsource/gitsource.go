// Package gitsource keeps a local, shallow copy of one branch of the config
// repo and reads revisions out of it without a worktree.
//
// The contract:
//
//   - Storage is a bare repository on disk under Config.Dir (the agent's
//     state dir); nothing else may write there. It holds only what shallow
//     (depth 1) fetches of the watched branch brought, without tags.
//   - Remote is the poll: one ls-remote of the branch (over HTTP a single
//     GET of info/refs); it returns the commit id the branch points to and
//     fetches nothing.
//   - Fetch(rev) makes rev and its whole tree present locally. It does no
//     network I/O when they already are. An incremental fetch that fails or
//     leaves the tree incomplete (history rewritten by a force-push, a
//     damaged store) is retried once as a fresh shallow clone into a sibling
//     directory that then replaces Dir by rename; the old store stays in use
//     if that clone fails too. Once incremental fetches have left
//     defaultMaxLoose objects, the next fetch is a fresh clone as well, so
//     the store does not grow forever.
//   - Tree(rev, dir) returns an fs.FS over the revision's tree, rooted at
//     dir, read straight from the object store. See TreeFS.
//   - All methods of a Repo, and of the TreeFS values it returns, serialize
//     on one mutex per repository: go-git is not safe for concurrent use.
//   - Secrets (SSH key, token) are read from their files at every network
//     operation, so a rotated key or token takes effect at the next poll;
//     Open reads them once to fail early. They are never logged.
//   - Traffic counts the HTTP bytes of ls-remote and fetch; file:// and
//     ssh:// are not counted.
//   - Verify(cfg, rev, live) checks that a fetched rev is signed (OpenPGP
//     or SSH, over the commit object without its gpgsig header) by a key
//     of cfg.Trust; with cfg.All, so must every commit since live or since
//     a commit verified before (their ids are kept in Dir+".verified"). To
//     see those commits it deepens the shallow store, at most 10,000
//     commits back. A refusal is a *SignatureError naming the commit, the
//     signer if known, and why.
package gitsource

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/go-git/go-billy/v5/osfs"
	gogit "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/storage/filesystem"
)

// Config says which branch of which repository to follow, where to keep it,
// and how to authenticate.
type Config struct {
	// URL of the repository: https://…, http://… (token only to a loopback
	// host), ssh://user@host/path or user@host:path, file:///path or /path.
	URL string
	// Branch is the watched branch, e.g. "main".
	Branch string
	// Dir is where the local bare repository lives, e.g. <state>/git.
	Dir string
	// SSHKeyFile is the private key for ssh URLs (required for ssh).
	SSHKeyFile string
	// KnownHostsFile lists the accepted host keys for ssh URLs (required for
	// ssh); a host key not in it fails the connection.
	KnownHostsFile string
	// TokenFile holds an access token for http(s) URLs, sent as the
	// password of HTTP basic auth.
	TokenFile string
	// TokenUser is the basic-auth user name sent with the token; default
	// "x-access-token" (GitHub; GitLab and Gitea accept any name).
	TokenUser string
}

// Commit describes one revision for status displays.
type Commit struct {
	Hash   string
	Author string // "Name <email>"
	// Committer is "Name <email>" of who committed it.
	Committer string
	When      time.Time
	Message   string // the first line only
}

var (
	// ErrBranchNotFound means the remote has no such branch (or is empty).
	ErrBranchNotFound = errors.New("branch not found")
	// ErrNotFetched means the commit is not in the local store: Fetch it.
	ErrNotFetched = errors.New("commit not fetched")
	// ErrBranchMoved means a Fetch asked for a commit the branch no longer
	// points to and the server does not serve commits by id: poll again.
	ErrBranchMoved = errors.New("branch moved")
)

// The store is cloned afresh, dropping what older revisions left, once it
// holds this many pack files or loose objects: a fresh clone leaves one
// pack; an incremental fetch adds a loose object per new blob or tree.
const (
	defaultMaxPacks = 8
	defaultMaxLoose = 8192
)

// objectCacheSize bounds the decoded objects kept in memory, and
// largeObject is the size above which blobs are streamed from the pack
// instead of being read into memory.
const (
	objectCacheSize = 4 * cache.MiByte
	largeObject     = 1 << 20
)

// Repo is the local copy of one branch. Its methods are safe for
// concurrent use; they run one at a time.
type Repo struct {
	cfg     Config
	log     *slog.Logger
	ep      *transport.Endpoint
	url     string // cfg.URL without credentials, for logs and errors
	httpc   transport.Transport
	traffic *counter

	// maxPacks and maxLoose bound the store (see defaultMaxPacks).
	maxPacks, maxLoose int

	mu       sync.Mutex
	st       *filesystem.Storage // nil after a failed swap, reopened on use
	closed   bool
	verified plumbing.Hash // the last commit found complete in st
}

// Open validates cfg and opens (or creates) the local repository in
// cfg.Dir. It does no network I/O.
func Open(cfg Config, log *slog.Logger) (*Repo, error) {
	if cfg.TokenUser == "" {
		cfg.TokenUser = "x-access-token"
	}
	ep, err := validate(cfg)
	if err != nil {
		return nil, err
	}
	r := &Repo{
		cfg:      cfg,
		ep:       ep,
		url:      redact(cfg.URL),
		traffic:  &counter{},
		maxPacks: defaultMaxPacks,
		maxLoose: defaultMaxLoose,
	}
	r.log = log.With("repo", r.url, "branch", cfg.Branch)
	r.httpc = newHTTPClient(http.DefaultTransport, r.traffic)
	if _, err := r.auth(); err != nil {
		return nil, fmt.Errorf("open %s: %w", r.url, err)
	}
	// Leftovers of a re-clone interrupted by a crash.
	for _, p := range []string{cloneDir(cfg.Dir), oldDir(cfg.Dir)} {
		if err := os.RemoveAll(p); err != nil {
			return nil, fmt.Errorf("open %s: %w", r.url, err)
		}
	}
	if ents, err := os.ReadDir(cfg.Dir); err == nil && len(ents) > 0 && !looksLikeRepo(cfg.Dir) {
		return nil, fmt.Errorf("open %s: not empty and not a git repository", cfg.Dir)
	}
	st, err := openStorage(cfg.Dir, cfg.Branch)
	if err != nil && looksLikeRepo(cfg.Dir) {
		// A store damaged by a crash: it is only a cache of the remote.
		r.log.Warn("local repository unreadable, starting afresh", "dir", cfg.Dir, "err", err)
		if err := os.Rename(cfg.Dir, oldDir(cfg.Dir)); err != nil {
			return nil, fmt.Errorf("open %s: %w", cfg.Dir, err)
		}
		if err := os.RemoveAll(oldDir(cfg.Dir)); err != nil {
			return nil, fmt.Errorf("open %s: %w", cfg.Dir, err)
		}
		if st, err = openStorage(cfg.Dir, cfg.Branch); err != nil {
			return nil, err
		}
	}
	if err != nil {
		return nil, err
	}
	r.st = st
	return r, nil
}

// looksLikeRepo reports whether dir holds a git repository, so that Open
// never wipes a directory it did not create.
func looksLikeRepo(dir string) bool {
	for _, name := range []string{"HEAD", "objects", "refs"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			return true
		}
	}
	return false
}

func validate(cfg Config) (*transport.Endpoint, error) {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("gitsource: %s: %s", field, fmt.Sprintf(format, args...)))
	}
	var ep *transport.Endpoint
	if cfg.URL == "" {
		bad("url", "required")
	} else if e, err := transport.NewEndpoint(cfg.URL); err != nil {
		bad("url", "%v", err)
	} else {
		ep = e
	}
	if cfg.Branch == "" {
		bad("branch", "required")
	} else if err := plumbing.NewBranchReferenceName(cfg.Branch).Validate(); err != nil {
		bad("branch", "%q is not a valid branch name", cfg.Branch)
	}
	if cfg.Dir == "" {
		bad("dir", "required")
	}
	if ep != nil {
		switch ep.Protocol {
		case "ssh":
			if cfg.SSHKeyFile == "" {
				bad("sshKeyFile", "required for an ssh url")
			}
			if cfg.KnownHostsFile == "" {
				bad("knownHostsFile", "required for an ssh url")
			}
			if cfg.TokenFile != "" {
				bad("tokenFile", "only for http(s) urls")
			}
		case "http", "https":
			if cfg.SSHKeyFile != "" || cfg.KnownHostsFile != "" {
				bad("sshKeyFile", "only for ssh urls")
			}
			if cfg.TokenFile != "" && ep.Protocol == "http" && !isLoopback(ep.Host) {
				bad("tokenFile", "refusing to send a token in clear text to %s: use https", ep.Host)
			}
		case "file":
			if cfg.SSHKeyFile != "" || cfg.KnownHostsFile != "" || cfg.TokenFile != "" {
				bad("url", "a local repository takes no credentials")
			}
		default:
			bad("url", "unsupported scheme %q (want https, http, ssh or file)", ep.Protocol)
		}
	}
	return ep, errors.Join(errs...)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// openStorage opens the bare repository in dir, creating it when missing.
func openStorage(dir, branch string) (*filesystem.Storage, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open %s: %w", dir, err)
	}
	st := filesystem.NewStorageWithOptions(osfs.New(dir), cache.NewObjectLRU(objectCacheSize),
		filesystem.Options{LargeObjectThreshold: largeObject})
	_, err := gogit.Open(st, nil)
	if errors.Is(err, gogit.ErrRepositoryNotExists) {
		_, err = gogit.InitWithOptions(st, nil, gogit.InitOptions{DefaultBranch: plumbing.NewBranchReferenceName(branch)})
	}
	if err == nil {
		// Reading the shallow list proves the store is readable.
		_, err = st.Shallow()
	}
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("open %s: %w", dir, err)
	}
	return st, nil
}

// Close releases the local repository. The Repo must not be used after.
func (r *Repo) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	if r.st == nil {
		return nil
	}
	err := r.st.Close()
	r.st = nil
	return err
}

// Remote asks the server which commit the branch points to (ls-remote). It
// transfers the ref advertisement only; nothing is fetched.
func (r *Repo) Remote(ctx context.Context) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return "", fmt.Errorf("ls-remote %s: repository closed", r.url)
	}
	start := time.Now()
	sess, err := r.session(ctx)
	if err != nil {
		return "", fmt.Errorf("ls-remote %s: %w", r.url, err)
	}
	defer sess.Close()
	_, h, err := r.branchTip(ctx, sess)
	if err != nil {
		return "", fmt.Errorf("ls-remote %s: %w", r.url, err)
	}
	r.log.Debug("ls-remote", "rev", h.String(), "took", time.Since(start))
	return h.String(), nil
}

// branchTip reads the server's ref advertisement and finds the branch in it.
func (r *Repo) branchTip(ctx context.Context, sess transport.UploadPackSession) (*packp.AdvRefs, plumbing.Hash, error) {
	ar, err := sess.AdvertisedReferencesContext(ctx)
	if errors.Is(err, transport.ErrEmptyRemoteRepository) {
		return nil, plumbing.ZeroHash, fmt.Errorf("repository is empty: %w %q", ErrBranchNotFound, r.cfg.Branch)
	}
	if err != nil {
		return nil, plumbing.ZeroHash, err
	}
	h, ok := ar.References[r.branchRef().String()]
	if !ok {
		return nil, plumbing.ZeroHash, fmt.Errorf("%w: %q", ErrBranchNotFound, r.cfg.Branch)
	}
	return ar, h, nil
}

// Commit describes rev, which must have been fetched.
func (r *Repo) Commit(ctx context.Context, rev string) (Commit, error) {
	h, err := parseRev(rev)
	if err != nil {
		return Commit{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.usable(ctx); err != nil {
		return Commit{}, fmt.Errorf("commit %s: %w", rev, err)
	}
	c, err := r.commit(h)
	if err != nil {
		return Commit{}, fmt.Errorf("commit %s: %w", rev, err)
	}
	msg, _, _ := strings.Cut(strings.TrimSpace(c.Message), "\n")
	return Commit{
		Hash:      c.Hash.String(),
		Author:    fmt.Sprintf("%s <%s>", c.Author.Name, c.Author.Email),
		Committer: fmt.Sprintf("%s <%s>", c.Committer.Name, c.Committer.Email),
		When:      c.Author.When,
		Message:   strings.TrimSpace(msg),
	}, nil
}

// Tree returns the tree of rev rooted at dir ("" or "." for the root).
// rev must have been fetched. dir may go through symbolic links that stay
// inside the commit's tree.
func (r *Repo) Tree(ctx context.Context, rev, dir string) (*TreeFS, error) {
	h, err := parseRev(rev)
	if err != nil {
		return nil, err
	}
	if dir == "" {
		dir = "."
	}
	dir = strings.TrimSuffix(dir, "/")
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.usable(ctx); err != nil {
		return nil, fmt.Errorf("tree %s: %w", rev, err)
	}
	c, err := r.commit(h)
	if err != nil {
		return nil, fmt.Errorf("tree %s: %w", rev, err)
	}
	t := &TreeFS{r: r, rev: h, root: c.TreeHash, modTime: c.Committer.When, trees: map[plumbing.Hash]*dirTree{}}
	e, err := t.resolve("tree", dir, true)
	if err != nil {
		return nil, fmt.Errorf("tree %s: %w", rev, err)
	}
	if !e.isDir() {
		return nil, fmt.Errorf("tree %s: %s is not a directory", rev, dir)
	}
	t.root = e.hash
	t.prefix = dir
	return t, nil
}

// Traffic returns the HTTP traffic of ls-remote and fetch so far.
func (r *Repo) Traffic() Traffic { return r.traffic.load() }

// usable reports ctx's error or a closed Repo, and reopens a store lost in
// a failed swap; the caller holds r.mu.
func (r *Repo) usable(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if r.closed {
		return errors.New("repository closed")
	}
	if r.st == nil {
		return r.reopen()
	}
	return nil
}

func (r *Repo) commit(h plumbing.Hash) (*object.Commit, error) {
	c, err := object.GetCommit(r.st, h)
	if errors.Is(err, plumbing.ErrObjectNotFound) {
		return nil, ErrNotFetched
	}
	return c, err
}

func (r *Repo) branchRef() plumbing.ReferenceName {
	return plumbing.NewBranchReferenceName(r.cfg.Branch)
}

func parseRev(rev string) (plumbing.Hash, error) {
	if len(rev) != 40 || !plumbing.IsHash(rev) {
		return plumbing.ZeroHash, fmt.Errorf("gitsource: %q is not a full commit id", rev)
	}
	return plumbing.NewHash(rev), nil
}

func cloneDir(dir string) string { return filepath.Clean(dir) + ".clone" }
func oldDir(dir string) string   { return filepath.Clean(dir) + ".old" }

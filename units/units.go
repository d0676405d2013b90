// Package units runs a node's workers and restarts them onto a new release
// without dropping below one serving instance.
//
// The contract, shared by both supervisors:
//
//   - Apply(ctx, workers, liveDir) brings the running workers to exactly
//     workers. Worker w's bundle is liveDir/workers/<w.Name>, read through
//     liveDir (the `current` symlink), so an instance started after the
//     caller switched the symlink runs the new release. Instance n of w
//     listens on w.Port+n and gets PORT in its environment. The symlink must
//     not move while Apply runs.
//   - An instance is restarted only when what it runs changed: its unit or
//     command line (argv, env, port, user, …), its environment file, or its
//     bundle. A bundle is identified by the files under the directory it
//     resolves to: each one's path, type and mode, and for a regular file its
//     device, inode, size and modification time, for a symlink its target; no
//     content is read. Releases share unchanged files as hard links, so a new
//     release whose bundle of w only links the previous one's files leaves
//     w's instances running, even though they started in an older release
//     directory; any file added, removed or replaced restarts them. Files that
//     are copied rather than linked are new: a worker whose install step ran
//     again (the release store copies such a bundle whole, so that the step
//     cannot change another release, unless nothing in it or its step
//     changed, when it links the previous installed bundle whole) is
//     restarted. That is the conservative side.
//   - Instances are restarted one at a time, in port order, and each must be
//     up and healthy before the next one is touched, so a worker with two or
//     more instances always has one serving. An unchanged instance is only
//     checked (running and answering its health route once) and restarted if
//     it is not, or if the release directory it started in is gone.
//   - ReleasesInUse lists the release directories (what liveDir pointed at
//     when each running instance was started, as the caller sees paths) that
//     instances may still run from; the release store must not delete them.
//     An instance that its supervisor restarted on its own (a crash) starts
//     from the live release, so the list errs on the side of keeping.
//   - Healthy means: GET w.Health.Path on 127.0.0.1:port answers
//     w.Health.Status w.Health.Successes times in a row, and the instance
//     stays up, without being restarted by its supervisor, for the settle
//     window (Config.Settle) after it started. The first instance that is not
//     healthy before ctx's deadline (or Config.InstanceTimeout) ends Apply
//     with an error naming the worker, the instance and why (its health
//     failure, its state and restart count, its last output lines). Nothing
//     after it is touched: the caller rolls back by switching the symlink back
//     and calling Apply with the previous workers.
//   - Workers that left the list are stopped and forgotten after the others
//     are healthy; an instance that is no longer wanted (fewer instances, a
//     new port) is stopped after its worker's wanted instances are healthy,
//     or before them when a wanted instance needs its port.
//   - Start (handover.go) is Apply without any stop, for the overlap
//     handover: a new release's instances on a worker's second range, from
//     the release's own directory, beside the live ones.
//   - A relative argv[0] containing a slash (bin/server, ./server.js) is
//     resolved in the bundle directory; a bare name (node) is looked up in
//     PATH; an absolute path is used as is.
//
// Two supervisors keep that contract: Systemd (servers: one template unit
// per worker, driven over systemd's private D-Bus socket) and Exec
// (development machines without systemd: instances are children of the
// agent). Detect says which one a node should use by default.
package units

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/drover-dev/drover/health"
	"github.com/drover-dev/drover/internal/layout"
	"github.com/drover-dev/drover/spec"
)

// Supervisor kinds, as named in node.yaml's `supervisor` setting.
const (
	KindSystemd = "systemd"
	KindExec    = "exec"
)

// Supervisor is what both implementations provide.
type Supervisor interface {
	Apply(ctx context.Context, workers []spec.Worker, liveDir string) error
	ReleasesInUse() []string
	Close(ctx context.Context) error
}

// Detect returns KindSystemd when this machine was booted by systemd (as
// sd_booted(3) tells: /run/systemd/system exists), KindExec otherwise.
func Detect() string {
	if fi, err := os.Stat("/run/systemd/system"); err == nil && fi.IsDir() {
		return KindSystemd
	}
	return KindExec
}

// Config holds the settings both supervisors share; zero values are
// replaced by the defaults below.
type Config struct {
	Log *slog.Logger
	// Settle is how long a started instance must stay up, without being
	// restarted, besides passing its health check. Default 2s.
	Settle time.Duration
	// InstanceTimeout bounds the wait for one instance when ctx has no
	// earlier deadline. Default 2m.
	InstanceTimeout time.Duration
	// HealthHost is the address instance ports are checked on. Default
	// 127.0.0.1.
	HealthHost string
	// AllowRoot lets a worker run as uid 0 when it names such a user: the
	// node's policy allows it (node.yaml policy.allowRoot). Without it a
	// uid-0 user is refused under any name.
	AllowRoot bool
}

// Defaults of Config.
const (
	DefaultSettle          = 2 * time.Second
	DefaultInstanceTimeout = 2 * time.Minute
)

func (c Config) withDefaults() Config {
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.Settle <= 0 {
		c.Settle = DefaultSettle
	}
	if c.InstanceTimeout <= 0 {
		c.InstanceTimeout = DefaultInstanceTimeout
	}
	if c.HealthHost == "" {
		c.HealthHost = "127.0.0.1"
	}
	return c
}

// healthCheck is the check of w's instance on port.
func (c Config) healthCheck(w *spec.Worker, port int) health.Check {
	h := w.Health
	return health.Check{
		Name:      fmt.Sprintf("worker %s instance on port %d", w.Name, port),
		URL:       "http://" + c.HealthHost + ":" + strconv.Itoa(port) + h.Path,
		Status:    h.Status,
		Successes: h.Successes,
		Interval:  h.Interval.D(),
		Timeout:   h.Timeout.D(),
	}
}

// errDown is returned by a probe when the instance went down or restarted.
var errDown = errors.New("it went down")

// settle waits until the instance passed its health check and, for the
// settle window since start, probe kept reporting it up; probe returns an
// error wrapping errDown as soon as it is not. It returns a description of
// the failure, or nil.
func (c Config) settle(ctx context.Context, check health.Check, start time.Time, probe func(context.Context) error) error {
	hctx, cancel := context.WithCancel(ctx)
	healthy := make(chan error, 1)
	go func() { healthy <- health.Wait(hctx, []health.Check{check}) }()
	waiting := true
	defer func() {
		cancel()
		if waiting {
			<-healthy
		}
	}()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := probe(ctx); err != nil && ctx.Err() == nil {
			return err
		}
		if !waiting && time.Since(start) >= c.Settle {
			return nil
		}
		select {
		case err := <-healthy:
			waiting = false
			if err != nil {
				return err
			}
		case <-tick.C:
		case <-ctx.Done():
			// Let health.Wait report its last failure, which says more
			// than "deadline exceeded".
			err := <-healthy
			waiting = false
			if err == nil {
				err = fmt.Errorf("did not stay up for the settle window (%s): %w", c.Settle, ctx.Err())
			}
			return err
		}
	}
}

// instanceContext bounds one instance's wait by the health budget of ctx
// (the rollout's healthTimeout), else InstanceTimeout, unless ctx
// ends earlier.
func (c Config) instanceContext(ctx context.Context) (context.Context, context.CancelFunc) {
	timeout := c.InstanceTimeout
	if d, ok := health.Budget(ctx); ok {
		timeout = d // the rollout's healthTimeout, per instance
	}
	if d, ok := ctx.Deadline(); ok && time.Until(d) < timeout {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, timeout)
}

var workerNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)

// checkWorkers refuses what spec validation refuses and would break a unit
// name or file: bad or duplicate names, no command, no ports.
func checkWorkers(workers []spec.Worker) error {
	seen := map[string]bool{}
	for i := range workers {
		w := &workers[i]
		if !workerNameRE.MatchString(w.Name) {
			return fmt.Errorf("worker %q: name must be lowercase letters, digits and dashes", w.Name)
		}
		if seen[w.Name] {
			return fmt.Errorf("worker %q is listed twice", w.Name)
		}
		seen[w.Name] = true
		if len(w.Exec) == 0 || w.Exec[0] == "" {
			return fmt.Errorf("worker %s: exec is empty", w.Name)
		}
		if w.Instances < 1 || w.Port < 1 || w.Port+w.Instances-1 > 65535 {
			return fmt.Errorf("worker %s: %d instances from port %d do not fit", w.Name, w.Instances, w.Port)
		}
		if w.Health.Path == "" {
			return fmt.Errorf("worker %s: health.path is empty", w.Name)
		}
	}
	return nil
}

// bundleDir is where worker name's files are, through the live symlink.
func bundleDir(liveDir, name string) string {
	return layout.WorkerDir(liveDir, name)
}

// bareNameRE matches a command name looked up in PATH.
var bareNameRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.+-]*$`)

// program resolves argv[0]: absolute as is, a bare name for a PATH lookup,
// anything else relative to the bundle directory.
func program(argv0, bundle string) string {
	switch {
	case filepath.IsAbs(argv0):
		return filepath.Clean(argv0)
	case bareNameRE.MatchString(argv0):
		return argv0
	default:
		return filepath.Join(bundle, argv0)
	}
}

// liveRelease is the directory liveDir (a path under root) points at, as
// seen under root: the symlink's target, made absolute. A liveDir that is
// not a symlink is its own release; "" when it is missing or unreadable.
func liveRelease(root, liveDir string) string {
	target, err := os.Readlink(filepath.Join(root, liveDir))
	if errors.Is(err, syscall.EINVAL) {
		return filepath.Clean(liveDir) // not a symlink
	}
	if err != nil {
		return ""
	}
	if !filepath.IsAbs(target) {
		target = filepath.Join(filepath.Dir(liveDir), target)
	}
	return filepath.Clean(target)
}

// releaseBundle is worker's bundle in release (a path under root), as a
// path drover reads.
func releaseBundle(root, release, worker string) string {
	return layout.WorkerDir(filepath.Join(root, release), worker)
}

// bundleID identifies the files under dir without reading them: each
// entry's path, type and mode, a regular file's device, inode, size and
// modification time, a symlink's target. Two bundles have the same id
// exactly when one's files are hard links of the other's (see the package
// doc). A missing dir is "missing".
func bundleID(dir string) string {
	h := sha256.New()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		switch mode := fi.Mode(); {
		case mode.IsDir():
			fmt.Fprintf(h, "d %q %v\n", rel, mode)
		case mode&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(h, "l %q %q\n", rel, target)
		default:
			var dev, ino uint64
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				dev, ino = st.Dev, st.Ino
			}
			fmt.Fprintf(h, "f %q %v %d %d:%d %d\n", rel, mode, fi.Size(), dev, ino, fi.ModTime().UnixNano())
		}
		return nil
	})
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if _, serr := os.Lstat(dir); errors.Is(serr, fs.ErrNotExist) {
			return "missing"
		}
		return "unreadable: " + err.Error()
	case err != nil:
		return "unreadable: " + err.Error()
	}
	return hex.EncodeToString(h.Sum(nil))
}

// present reports whether a recorded release still holds worker's bundle:
// an instance started there has lost its working directory when it does not.
func present(root, release, worker string) bool {
	if release == "" {
		return false
	}
	fi, err := os.Stat(releaseBundle(root, release, worker))
	return err == nil && fi.IsDir()
}

// fileID identifies the content of an optional file (an environment file).
func fileID(root, path string) string {
	if path == "" {
		return ""
	}
	b, err := os.ReadFile(filepath.Join(root, path))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "absent"
		}
		return "unreadable: " + err.Error()
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// secretID identifies w's decrypted secret file in release by its inode,
// not its content: a hash of the content kept in the state file would let
// a reader of that file test guesses of the secret. prepare links an
// unchanged secret file from the previous release, so it keeps its inode.
func secretID(root, release string, w *spec.Worker) string {
	if w.SecretEnv == "" {
		return ""
	}
	fi, err := os.Stat(filepath.Join(root, layout.SecretsEnvFile(release, w.Name)))
	if err != nil {
		return "unreadable: " + err.Error()
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return "unknown"
	}
	return fmt.Sprintf("%d:%d %d %d", st.Dev, st.Ino, fi.Size(), fi.ModTime().UnixNano())
}

func fingerprint(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		fmt.Fprintf(h, "%d:%s\n", len(p), p)
	}
	return hex.EncodeToString(h.Sum(nil))[:32]
}

// tailLines returns the last n non-empty lines of s.
func tailLines(s string, n int) []string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	var out []string
	for _, l := range lines {
		if strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	if len(out) > n {
		out = out[len(out)-n:]
	}
	return out
}

func formatOutput(lines []string) string {
	if len(lines) == 0 {
		return ""
	}
	return "; last output:\n    " + strings.Join(lines, "\n    ")
}

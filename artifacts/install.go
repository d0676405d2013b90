package artifacts

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/drover-dev/drover/internal/atomicfile"
	"github.com/drover-dev/drover/internal/command"
	"github.com/drover-dev/drover/internal/layout"
	"github.com/drover-dev/drover/internal/sandbox"
	"github.com/drover-dev/drover/spec"
)

// An install step (yarn install, npm ci) runs code from the internet: one
// compromised package in a lockfile must not be root on every node. So it
// runs:
//   - as an unprivileged user: the worker's own user when the spec names
//     one, else nobody (65534:65534), when the agent is root; a worker whose
//     user is uid 0 (a node policy may allow it) has its step run as
//     nobody. An agent that is not root runs it as itself, and refuses a
//     worker naming another user rather than ignore it;
//   - with a clean environment: PATH, LANG, CI, a HOME (and npm's and
//     yarn's caches in it) made for this run and removed after it, and the
//     worker's env from the spec; nothing of the agent's (tokens, DSN);
//   - with write access only to its new bundle, which it owns during the
//     step; afterwards every file in it is root's again, with no group or
//     other write bit and no setuid/setgid bit, so that nothing the step
//     left can be changed by the worker or the next step;
//   - within the worker's installTimeout, in a process group of its own
//     that is killed whole when the time is up;
//   - under resource limits: no core dumps, no file larger than
//     Options.MaxInstallFileBytes (RLIMIT_CORE, RLIMIT_FSIZE, set by
//     util-linux's prlimit before the step starts; in a unit, LimitCORE=
//     and LimitFSIZE=, besides the unit's MemoryMax= and TasksMax=).
//     Not RLIMIT_AS: V8 reserves address space far beyond what it uses
//     (a WebAssembly.Memory, which yarn's libzip needs, fails under 4 GiB),
//     and not RLIMIT_NPROC: it counts every process of the user, the
//     worker's running instances and, for nobody, whatever else runs as
//     nobody, so it is no bound on the step itself.
//
// The step's whole output is kept in the release (install-<worker>.log,
// mode 0640); an error carries only a short tail with things that look like
// credentials redacted, since it reaches status, Redis and the journal.

// nobody is the build identity when the worker names no user.
const nobody = 65534

// installEnvPath is the PATH of an install step.
const installEnvPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// install runs w's install step in its new bundle directory.
func (b *build) install(ctx context.Context, w *spec.Worker) error {
	if len(w.Install) == 0 {
		return nil
	}
	dir := layout.WorkerDir(b.dir, w.Name)
	timeout := w.InstallTimeout.D()
	if timeout <= 0 {
		timeout = spec.DefaultInstallTimeout
	}
	cred, err := installCredential(w, os.Geteuid())
	if err != nil {
		return fmt.Errorf("install worker %s: %w", w.Name, err)
	}
	home := filepath.Join(b.dir, ".install-home-"+w.Name)
	if err := os.Mkdir(home, 0o700); err != nil {
		return fmt.Errorf("install worker %s: %w", w.Name, err)
	}
	defer os.RemoveAll(home)
	if cred != nil {
		if err := chownTree(home, int(cred.Uid), int(cred.Gid)); err != nil {
			return fmt.Errorf("install worker %s: %w", w.Name, err)
		}
		if err := chownTree(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return fmt.Errorf("install worker %s: give the bundle to the build user: %w", w.Name, err)
		}
	}
	c := command.Cmd{Argv: w.Install, Dir: dir, Timeout: timeout, Env: installEnv(w, home), Credential: cred}
	if b.s.runsInstallsInUnits() {
		c = b.unitCmd(w, c, home)
	} else if c, err = b.limitedCmd(c); err != nil {
		return fmt.Errorf("install worker %s: %w", w.Name, err)
	}
	start := time.Now()
	out, runErr := command.Run(ctx, c)
	// Take the bundle back before anything else, failed step or not.
	if err := reclaimTree(dir); err != nil {
		return fmt.Errorf("install worker %s: take the bundle back from the build user: %w", w.Name, err)
	}
	logFile := filepath.Join(b.dir, "install-"+w.Name+".log")
	if err := atomicfile.WriteFile(logFile, out, 0o640); err != nil {
		return fmt.Errorf("install worker %s: keep its output: %w", w.Name, err)
	}
	if runErr != nil {
		return fmt.Errorf("install worker %s: %s (whole output in %s)", w.Name, installFailure(runErr, w.Install), logFile)
	}
	b.s.log.Info("installed worker", "rev", b.rev, "worker", w.Name, "took", time.Since(start), "uid", uidOf(cred))
	return nil
}

// RunInstallsInUnits makes every install step run in a transient systemd
// unit (systemd-run) with the workers' sandbox (sandbox.Settings): on
// top of running as the build user with a clean environment, the step then
// sees none of /etc/drover, nothing of the state dir but its new bundle
// (writable) and its HOME, cannot reach the cloud metadata address, and has
// memory and task limits. For nodes whose workers run under systemd.
func (s *Store) RunInstallsInUnits() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.installUnits = true
}

func (s *Store) runsInstallsInUnits() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.installUnits
}

// Limits of an install step's unit: npm and yarn want more than a worker.
const (
	installMemoryMax = "1G"
	installTasksMax  = 512
)

// unitCmd turns c, the install step of w, into a systemd-run of it in a
// transient unit: systemd-run waits for the unit and passes its output
// through; RuntimeMaxSec stops the unit itself when the step's time is up
// (killing systemd-run alone would not).
func (b *build) unitCmd(w *spec.Worker, c command.Cmd, home string) command.Cmd {
	argv := []string{"systemd-run", "--quiet", "--wait", "--pipe", "--collect", "--service-type=exec",
		// Unique, even beside a unit a crashed agent left behind.
		fmt.Sprintf("--unit=drover-install-%s-%s-%d", w.Name, b.rev[:12], time.Now().UnixNano()%1e9),
		"--working-directory=" + c.Dir,
		"-p", fmt.Sprintf("RuntimeMaxSec=%ds", int(c.Timeout.Seconds())+1),
		"-p", "TemporaryFileSystem=" + b.s.dir + ":ro",
		"-p", "BindPaths=" + c.Dir + " " + home,
		"-p", "InaccessiblePaths=-" + sandbox.EtcDir,
	}
	if c.Credential != nil {
		argv = append(argv, fmt.Sprintf("--uid=%d", c.Credential.Uid), fmt.Sprintf("--gid=%d", c.Credential.Gid))
	}
	for _, p := range sandbox.Settings() {
		if strings.HasPrefix(p, "UMask=") {
			p = "UMask=0022" // the worker, another user, reads what the step writes
		}
		argv = append(argv, "-p", p)
	}
	argv = append(argv, "-p", "MemoryMax="+installMemoryMax, "-p", "TasksMax="+strconv.Itoa(installTasksMax),
		"-p", "LimitCORE=0", "-p", "LimitFSIZE="+strconv.FormatInt(b.s.opts.MaxInstallFileBytes, 10))
	for _, kv := range c.Env {
		argv = append(argv, "--setenv="+kv)
	}
	argv = append(argv, "--")
	argv = append(argv, c.Argv...)
	// systemd-run itself runs as the agent, with nothing of its
	// environment but PATH: the unit's comes from --setenv alone.
	return command.Cmd{Argv: argv, Dir: c.Dir, Timeout: c.Timeout, Env: []string{"PATH=" + installEnvPath}}
}

// limitedCmd is c run under the install step's rlimits, by prlimit (Go
// cannot set a child's rlimits between fork and exec): prlimit lowers its
// own soft and hard limits and execs the step, so neither it nor its
// children can raise them again. A bare program name is looked up as
// before, in the agent's PATH; a node without prlimit runs no install step
// rather than one without limits.
func (b *build) limitedCmd(c command.Cmd) (command.Cmd, error) {
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		return c, fmt.Errorf("prlimit (util-linux) is not installed, and install steps run under resource limits: %w", err)
	}
	prog := c.Argv[0]
	if !strings.Contains(prog, "/") {
		if p, err := exec.LookPath(prog); err == nil {
			prog = p
		}
	}
	argv := []string{prlimit, "--core=0", "--fsize=" + strconv.FormatInt(b.s.opts.MaxInstallFileBytes, 10), "--", prog}
	c.Argv = append(argv, c.Argv[1:]...)
	return c, nil
}

// installCredential is whom w's install step runs as, for an agent of
// effective uid euid, or nil to run it as the agent (which is then not
// root). A user the agent cannot switch to is an error, never silently
// the agent's own user.
func installCredential(w *spec.Worker, euid int) (*syscall.Credential, error) {
	if euid != 0 && w.User == "" {
		return nil, nil
	}
	if euid == 0 && w.User == "" {
		return &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{}}, nil
	}
	u, err := user.Lookup(w.User)
	if err != nil {
		return nil, fmt.Errorf("user %q: %w", w.User, err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("user %q: %w", w.User, err)
	}
	switch {
	case euid != 0 && int(uid) == euid:
		return nil, nil
	case euid != 0:
		return nil, fmt.Errorf("the agent runs as uid %d and cannot run the install step as user %q; run the agent as root, or leave user out", euid, w.User)
	case uid == 0:
		// The node's policy allowed a root worker (policy.allowRoot); its
		// install step is still not root.
		return &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{}}, nil
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
}

func uidOf(c *syscall.Credential) int {
	if c == nil {
		return os.Geteuid()
	}
	return int(c.Uid)
}

// installEnv is the whole environment of an install step.
func installEnv(w *spec.Worker, home string) []string {
	env := map[string]string{
		"PATH": installEnvPath, "LANG": "C.UTF-8", "CI": "true", "HOME": home,
		"npm_config_cache": filepath.Join(home, ".npm"), "YARN_CACHE_FOLDER": filepath.Join(home, ".yarn"),
		"npm_config_update_notifier": "false",
	}
	maps.Copy(env, w.Env) // the spec's env wins: NODE_ENV=production, say
	var out []string
	for _, k := range slices.Sorted(maps.Keys(env)) {
		out = append(out, k+"="+env[k])
	}
	return out
}

// chownTree gives every entry of dir (links themselves, not their targets)
// to uid:gid.
func chownTree(dir string, uid, gid int) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
}

// reclaimTree makes every entry of dir root's again (when the agent is
// root) and drops group/other write and setuid/setgid bits, refusing what
// a release may not hold (devices, fifos, sockets the step left).
func reclaimTree(dir string) error {
	root := os.Geteuid() == 0
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if root {
			if err := os.Lchown(p, 0, 0); err != nil {
				return err
			}
		}
		t := d.Type()
		if t&fs.ModeSymlink != 0 {
			return nil
		}
		if !t.IsDir() && !t.IsRegular() {
			return fmt.Errorf("%s is a %s: an install step may leave only files, directories and symlinks", p, typeName(t))
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		m := fi.Mode()
		want := m.Perm() &^ 0o022
		if m&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != 0 || want != m.Perm() {
			return os.Chmod(p, want)
		}
		return nil
	})
}

// installTail is how much of a failed step's output an error carries, and
// installArgv how much of its command line.
const (
	installTail = 400
	installArgv = 120
)

var (
	// credentialRE finds key=value or key: value pairs whose key names a
	// secret, and URLs with a password.
	credentialRE = regexp.MustCompile(`(?i)((?:token|password|passwd|secret|auth|authorization|api[_-]?key|_authToken)["']?\s*[:=]\s*)("[^"]*"|'[^']*'|\S+)`)
	bearerRE     = regexp.MustCompile(`(?i)(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}`)
	urlUserRE    = regexp.MustCompile(`(://[^/\s:@]+):[^@\s/]+@`)
)

// installFailure is what a failed install step's error says: the step
// (argv, as the spec gives it), how it ended and the redacted tail of its
// output.
func installFailure(err error, step []string) string {
	var ce *command.Error
	if !errors.As(err, &ce) {
		return err.Error()
	}
	how := "exit status " + strconv.Itoa(ce.ExitCode)
	switch {
	case ce.TimedOut:
		how = "timed out"
	case ce.ExitCode <= 0 && ce.Err != nil:
		how = ce.Err.Error()
	}
	out := strings.TrimSpace(ce.Output)
	if len(out) > installTail {
		out = "…" + strings.ToValidUTF8(out[len(out)-installTail:], "")
	}
	out = redact(out)
	argv := strings.Join(step, " ")
	if len(argv) > installArgv {
		argv = strings.ToValidUTF8(argv[:installArgv], "") + "…"
	}
	if out == "" {
		return argv + ": " + how
	}
	return argv + ": " + how + ": " + out
}

// redact hides what looks like a credential in s.
func redact(s string) string {
	s = urlUserRE.ReplaceAllString(s, "$1:[redacted]@")
	s = bearerRE.ReplaceAllString(s, "$1 [redacted]")
	return credentialRE.ReplaceAllString(s, "${1}[redacted]")
}

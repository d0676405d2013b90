package nginxconf

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/drover-dev/drover/internal/atomicfile"

	"github.com/drover-dev/drover/internal/command"
)

// Nginx drives one nginx master: tests configs, installs them, reloads.
type Nginx struct {
	// Binary is the nginx program; "" runs "nginx" from PATH.
	Binary string
	// Config is the live main config file, which drover owns.
	Config string
	// Prefix is nginx's -p; "" keeps the compiled-in prefix.
	Prefix string
	// PIDFile is the master's pid file: the rendered `pid` directive.
	PIDFile string
	Log     *slog.Logger
	// ReloadTimeout bounds the wait for a reload to take effect (and for
	// Start); 0 means DefaultReloadTimeout.
	ReloadTimeout time.Duration

	mu sync.Mutex // one Install or Reload at a time
}

// DefaultReloadTimeout bounds a reload when Nginx.ReloadTimeout is 0.
const DefaultReloadTimeout = 30 * time.Second

func (n *Nginx) binary() string {
	if n.Binary == "" {
		return "nginx"
	}
	return n.Binary
}

func (n *Nginx) log() *slog.Logger {
	if n.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return n.Log
}

func (n *Nginx) reloadTimeout() time.Duration {
	if n.ReloadTimeout <= 0 {
		return DefaultReloadTimeout
	}
	return n.ReloadTimeout
}

// argv is nginx's command line with the prefix and config options.
func (n *Nginx) argv(conf string, opts ...string) []string {
	argv := append([]string{n.binary()}, opts...)
	if n.Prefix != "" {
		argv = append(argv, "-p", n.Prefix)
	}
	return append(argv, "-c", conf)
}

// Test runs `nginx -t` on confPath; the error carries nginx's message.
func (n *Nginx) Test(ctx context.Context, confPath string) error {
	_, err := command.Run(ctx, command.Cmd{Argv: n.argv(confPath, "-t", "-q"), Timeout: time.Minute})
	if err != nil {
		return fmt.Errorf("nginx config test: %w", err)
	}
	return nil
}

// Install makes content the live config and nginx's running configuration.
// It returns changed=false, and neither writes nor reloads, when the live
// file already holds content. Otherwise it writes a candidate beside the
// live file, tests it with `nginx -t`, renames it over the live file and
// reloads nginx, waiting until the reload took effect. On any failure the
// live file is left (or put back) byte-for-byte as it was, and nginx keeps
// its previous configuration. When nginx is not running the file is
// installed and nothing is reloaded: nginx reads it when it starts.
func (n *Nginx) Install(ctx context.Context, content []byte) (changed bool, err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	start := time.Now()
	old, err := os.ReadFile(n.Config)
	existed := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("install nginx config: %w", err)
	}
	if existed && bytes.Equal(old, content) {
		return false, nil
	}
	mode := fs.FileMode(0o644)
	if fi, err := os.Stat(n.Config); err == nil {
		mode = fi.Mode().Perm()
	}
	cand, err := atomicfile.WriteTemp(n.Config, content, mode)
	if err != nil {
		return false, fmt.Errorf("install nginx config: %w", err)
	}
	defer os.Remove(cand) // fails harmlessly once renamed
	if err := n.Test(ctx, cand); err != nil {
		return false, fmt.Errorf("install nginx config: %w", err)
	}
	if err := os.Rename(cand, n.Config); err != nil {
		return false, fmt.Errorf("install nginx config: %w", err)
	}
	if err := atomicfile.SyncDir(filepath.Dir(n.Config)); err != nil {
		return false, n.putBack(ctx, old, existed, mode, fmt.Errorf("install nginx config: %w", err))
	}
	pid, ok := n.Running()
	if !ok {
		n.log().Warn("nginx config installed; nginx is not running, so nothing reloaded", "config", n.Config)
		return true, nil
	}
	if err := n.reload(ctx, pid); err != nil {
		return false, n.putBack(ctx, old, existed, mode, fmt.Errorf("install nginx config: %w", err))
	}
	n.log().Info("nginx config installed", "config", n.Config, "took", time.Since(start).Round(time.Millisecond))
	return true, nil
}

// putBack restores the previous live file after a failure that followed the
// rename, and has nginx load it again in case the failed reload did apply
// after its deadline, so the file and nginx agree.
func (n *Nginx) putBack(ctx context.Context, old []byte, existed bool, mode fs.FileMode, cause error) error {
	var err error
	if existed {
		err = atomicfile.WriteFile(n.Config, old, mode)
	} else {
		err = os.Remove(n.Config)
	}
	if err != nil {
		return errors.Join(cause, fmt.Errorf("put the previous nginx config back: %w", err))
	}
	if pid, ok := n.Running(); ok {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), n.reloadTimeout())
		defer cancel()
		if err := n.reload(ctx, pid); err != nil {
			return errors.Join(cause, fmt.Errorf("reload the previous nginx config: %w", err))
		}
	}
	return cause
}

// Reload has the running master re-read its config (SIGHUP to the pid in
// PIDFile) and waits until the reload took effect: the master has started
// workers of the new generation (new children titled "nginx: worker
// process") and each old worker has stopped accepting connections (nginx
// retitles it "worker process is shutting down" as it closes its listening
// sockets), or has exited. A config nginx refuses starts no new workers, so
// that case ends in an error when the deadline passes; nginx then keeps the
// previous config and says why in its error log.
func (n *Nginx) Reload(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	pid, ok := n.Running()
	if !ok {
		return fmt.Errorf("reload nginx: not running (no live master in pid file %s)", n.PIDFile)
	}
	return n.reload(ctx, pid)
}

func (n *Nginx) reload(ctx context.Context, master int) error {
	ctx, cancel := context.WithTimeout(ctx, n.reloadTimeout())
	defer cancel()
	start := time.Now()
	before, err := n.serving(ctx, master)
	if err != nil {
		return fmt.Errorf("reload nginx: %w", err)
	}
	if err := syscall.Kill(master, syscall.SIGHUP); err != nil {
		return fmt.Errorf("reload nginx: signal master %d: %w", master, err)
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		now, err := children(master)
		if err != nil {
			return fmt.Errorf("reload nginx: %w", err)
		}
		if reloaded(before, now) {
			n.log().Debug("nginx reloaded", "pid", master, "took", time.Since(start).Round(time.Millisecond))
			return nil
		}
		if !isMaster(master) {
			return fmt.Errorf("reload nginx: master %d exited", master)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("reload nginx (master %d): no new workers after %s, so nginx keeps its previous config (see its error log): %w",
				master, time.Since(start).Round(time.Millisecond), ctx.Err())
		case <-tick.C:
		}
	}
}

// serving waits until master has a worker accepting connections and
// returns its children. A master that has just started may not have forked
// its workers yet: they must not be taken for the reload's new generation.
func (n *Nginx) serving(ctx context.Context, master int) (map[proc]string, error) {
	for {
		kids, err := children(master)
		if err != nil {
			return nil, err
		}
		for _, title := range kids {
			if accepting(title) {
				return kids, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("master %d has no worker process: %w", master, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// proc identifies a process across pid reuse.
type proc struct {
	pid   int
	start uint64 // clock ticks after boot
}

const (
	workerTitle   = "nginx: worker process"
	shuttingTitle = "worker process is shutting down"
)

// reloaded reports whether a new generation of workers serves: a worker not
// there before, and no worker from before still accepting connections.
func reloaded(before, now map[proc]string) bool {
	fresh := false
	for p, title := range now {
		_, old := before[p]
		if old && accepting(title) {
			return false
		}
		fresh = fresh || (!old && accepting(title))
	}
	return fresh
}

// accepting reports whether a process title is a worker's that still
// accepts connections.
func accepting(title string) bool {
	return strings.HasPrefix(title, workerTitle) && !strings.Contains(title, shuttingTitle)
}

// children lists the processes whose parent is pid, with their titles. It
// scans /proc: /proc/PID/task/TID/children is not in every kernel.
func children(pid int) (map[proc]string, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	kids := map[proc]string{}
	for _, e := range entries {
		cpid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		ppid, start, ok := procStat(cpid)
		if !ok || ppid != pid {
			continue
		}
		kids[proc{cpid, start}] = cmdline(cpid)
	}
	return kids, nil
}

// procStat reads the parent pid and start time of pid from /proc/PID/stat;
// ok is false when the process is gone or a zombie.
func procStat(pid int) (ppid int, start uint64, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	// The command name, in parentheses, may hold spaces: fields follow the
	// last ')'. Then: state ppid ... starttime is field 22 of the line.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 || f[0] == "Z" {
		return 0, 0, false
	}
	ppid, err1 := strconv.Atoi(f[1])
	start, err2 := strconv.ParseUint(f[19], 10, 64)
	return ppid, start, err1 == nil && err2 == nil
}

func cmdline(pid int) string {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return strings.TrimRight(strings.ReplaceAll(string(b), "\x00", " "), " ")
}

// isMaster reports whether pid is a live nginx master process.
func isMaster(pid int) bool {
	if _, _, ok := procStat(pid); !ok {
		return false
	}
	return strings.HasPrefix(cmdline(pid), "nginx: master process")
}

// Running returns the pid of the nginx master named by PIDFile, if that
// process is alive and is an nginx master (a stale pid file whose pid was
// reused does not count).
func (n *Nginx) Running() (pid int, ok bool) {
	b, err := os.ReadFile(n.PIDFile)
	if err != nil {
		return 0, false
	}
	pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 || !isMaster(pid) {
		return 0, false
	}
	return pid, true
}

// Start starts nginx with Config, daemonized, unless it is already running,
// and waits until the master has written its pid file. It is for
// development machines: on servers nginx is a systemd service. The config
// should log errors to a file, as nginx otherwise keeps the caller's stderr.
func (n *Nginx) Start(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.Running(); ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, n.reloadTimeout())
	defer cancel()
	_, err := command.Run(ctx, command.Cmd{Argv: n.argv(n.Config)})
	if err != nil && !errors.Is(err, exec.ErrWaitDelay) {
		return fmt.Errorf("start nginx: %w", err)
	}
	// With error_log on stderr the daemon holds the output pipe open, and Run
	// gives up on it after a delay although nginx started: check the pid.
	for {
		if pid, ok := n.Running(); ok {
			n.log().Info("nginx started", "pid", pid, "config", n.Config)
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("start nginx: no master in pid file %s: %w", n.PIDFile, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

package units

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/drover-dev/drover/health"
	"github.com/drover-dev/drover/internal/layout"
	"github.com/drover-dev/drover/secrets"
	"github.com/drover-dev/drover/spec"
)

// ExecConfig configures the exec supervisor.
type ExecConfig struct {
	Config
	// Env is the environment every instance starts from, before the
	// worker's env, PORT and its environment file. Default: the agent's own
	// environment.
	Env []string
	// An instance that exits is started again after a delay that doubles
	// from BackoffMin up to BackoffMax, and starts from BackoffMin again
	// once an instance ran for BackoffReset. Defaults 100ms, 10s, 10s.
	BackoffMin, BackoffMax, BackoffReset time.Duration
	// StopTimeout is how long an instance has between SIGTERM and SIGKILL.
	// Default 10s.
	StopTimeout time.Duration
}

// Exec runs workers as child processes of the agent, for development
// machines without systemd. Each instance runs in its own process group in
// the bundle directory, with the worker's environment and PORT; its output
// goes to the agent's log, one record per line, with the worker and port.
// An instance that exits is restarted with backoff. Close stops them all.
type Exec struct {
	cfg ExecConfig

	mu sync.Mutex // one Apply (or Close) at a time
	// procs is changed only by the holder of mu, under procsMu too, so
	// that ReleasesInUse can read it while Apply runs.
	procsMu sync.Mutex
	procs   map[string]*proc
	closed  bool
}

// NewExec returns an exec supervisor with no instances.
func NewExec(cfg ExecConfig) *Exec {
	cfg.Config = cfg.Config.withDefaults()
	if cfg.Env == nil {
		cfg.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "PORT=") })
	}
	if cfg.BackoffMin <= 0 {
		cfg.BackoffMin = 100 * time.Millisecond
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = 10 * time.Second
	}
	if cfg.BackoffReset <= 0 {
		cfg.BackoffReset = 10 * time.Second
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = 10 * time.Second
	}
	return &Exec{cfg: cfg, procs: map[string]*proc{}}
}

// StopsWorkersOnClose is true: the instances are the agent's children and
// stop with it (Close), so the agent leaves the load balancer first.
func (e *Exec) StopsWorkersOnClose() bool { return true }

// Close stops every instance: SIGTERM to its process group, then SIGKILL
// after StopTimeout or when ctx ends. It returns when all of them exited. A
// running Apply finishes first (cancel its context to hurry it).
func (e *Exec) Close(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.closed = true
	for _, p := range e.procs {
		p.stop()
	}
	var err error
	for name, p := range e.procs {
		select {
		case <-p.done:
		case <-ctx.Done():
			err = ctx.Err()
			p.kill()
			<-p.done
		}
		e.setProc(name, nil)
	}
	return err
}

// ReleasesInUse lists the release directories that the instances were
// started in (see the package doc).
func (e *Exec) ReleasesInUse() []string {
	e.procsMu.Lock()
	defer e.procsMu.Unlock()
	var dirs []string
	for _, p := range e.procs {
		if p.release != "" {
			dirs = append(dirs, p.release)
		}
	}
	slices.Sort(dirs)
	return slices.Compact(dirs)
}

// setProc sets (or with nil, removes) the instance name; the caller holds mu.
func (e *Exec) setProc(name string, p *proc) {
	e.procsMu.Lock()
	defer e.procsMu.Unlock()
	if p == nil {
		delete(e.procs, name)
	} else {
		e.procs[name] = p
	}
}

// Apply brings the instances to exactly workers; see the package doc.
func (e *Exec) Apply(ctx context.Context, workers []spec.Worker, liveDir string) error {
	return e.apply(ctx, workers, liveDir, false)
}

// Start brings up workers' instances as Apply does, but stops nothing
// else (see the package doc: the overlap handover).
func (e *Exec) Start(ctx context.Context, workers []spec.Worker, liveDir string) error {
	return e.apply(ctx, workers, liveDir, true)
}

func (e *Exec) apply(ctx context.Context, workers []spec.Worker, liveDir string, additive bool) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return errors.New("exec supervisor is closed")
	}
	if err := checkWorkers(workers); err != nil {
		return err
	}
	// A user it cannot honour refuses the whole Apply before any change.
	for i := range workers {
		if _, err := execCredential(&workers[i], e.cfg.AllowRoot); err != nil {
			return err
		}
	}
	wanted := map[string]bool{}
	ports := map[int]bool{}
	for _, w := range workers {
		for _, p := range w.InstancePorts() {
			wanted[InstanceName(w.Name, p)] = true
			ports[p] = true
		}
	}
	for name, p := range e.procs {
		if !wanted[name] && ports[p.port] {
			e.remove(name)
		}
	}
	release := liveRelease("", liveDir)
	if additive {
		return e.startAll(ctx, workers, liveDir, release)
	}
	for i := range workers {
		w := &workers[i]
		files := bundleID(releaseBundle("", release, w.Name))
		for _, port := range w.InstancePorts() {
			if err := e.ensure(ctx, w, port, liveDir, files); err != nil {
				return err
			}
		}
		for name, p := range e.procs {
			if p.worker == w.Name && !wanted[name] {
				e.remove(name)
			}
		}
	}
	for name := range e.procs {
		if !wanted[name] {
			e.remove(name)
		}
	}
	return nil
}

func (e *Exec) remove(name string) {
	p := e.proc(name)
	p.stop()
	<-p.done
	e.setProc(name, nil)
	e.cfg.Log.Info("worker instance stopped", "worker", p.worker, "port", p.port)
}

// ensure makes the instance on port run what w and its bundle (whose files
// bundleID identified as files) say, and be healthy.
func (e *Exec) ensure(ctx context.Context, w *spec.Worker, port int, liveDir, files string) error {
	name := InstanceName(w.Name, port)
	bundle := bundleDir(liveDir, w.Name)
	argv := slices.Clone(w.Exec)
	argv[0] = program(argv[0], bundle)
	env := slices.Clone(e.cfg.Env)
	for _, k := range slices.Sorted(maps.Keys(w.Env)) {
		env = append(env, k+"="+w.Env[k])
	}
	env = append(env, "PORT="+strconv.Itoa(port))
	env = append(env, readEnvFile(w.EnvironmentFile)...)
	if w.SecretEnv != "" {
		secret, err := secrets.ReadEnvFile(layout.SecretsEnvFile(liveDir, w.Name))
		if err != nil {
			return fmt.Errorf("worker %s: secret env: %w", w.Name, err)
		}
		env = append(env, secret...)
	}
	cred, err := execCredential(w, e.cfg.AllowRoot)
	if err != nil {
		return err
	}
	fp := fingerprint(strings.Join(argv, "\x00")+"\x00user="+w.User, strings.Join(env, "\x00"), bundle, files)
	check := e.cfg.healthCheck(w, port)

	if p := e.proc(name); p != nil {
		switch {
		case p.fp != fp || !p.up():
		case !present("", p.release, w.Name):
			e.cfg.Log.Warn("worker instance unchanged but the release it started in is gone; restarting it",
				"worker", w.Name, "port", port, "release", p.release)
		default:
			once := check
			once.Successes = 1
			cctx, cancel := context.WithTimeout(ctx, 2*max(check.Timeout, time.Second))
			err := health.Wait(cctx, []health.Check{once})
			cancel()
			if err == nil {
				return nil
			}
			e.cfg.Log.Warn("worker instance unchanged but not healthy; restarting it", "worker", w.Name, "port", port, "err", err)
		}
		e.remove(name)
	}
	p := &proc{
		cfg: &e.cfg, worker: w.Name, port: port, fp: fp, argv: argv, dir: bundle, env: env, cred: cred,
		// The process resolves dir through the symlink when it starts.
		release: liveRelease("", liveDir),
		log:     e.cfg.Log.With("worker", w.Name, "port", port),
		started: make(chan struct{}), stopCh: make(chan struct{}), killCh: make(chan struct{}), done: make(chan struct{}),
	}
	e.setProc(name, p)
	start := time.Now()
	go p.run()
	ictx, cancel := e.cfg.instanceContext(ctx)
	defer cancel()
	select {
	case <-p.started:
	case <-ictx.Done():
		return p.explain(ictx.Err())
	}
	probe := func(context.Context) error {
		p.mu.Lock()
		defer p.mu.Unlock()
		switch {
		case p.startErr != nil:
			return fmt.Errorf("%w: %v", errDown, p.startErr)
		case !p.running:
			return fmt.Errorf("%w: %s", errDown, p.lastExit)
		case p.starts != 1:
			return fmt.Errorf("%w and was restarted", errDown)
		}
		return nil
	}
	if err := e.cfg.settle(ictx, check, start, probe); err != nil {
		return p.explain(err)
	}
	p.log.Info("worker instance started and healthy", "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// proc is one instance: a goroutine that keeps its process running.
type proc struct {
	cfg    *ExecConfig
	log    *slog.Logger
	worker string
	port   int
	fp     string
	argv   []string
	dir    string
	env    []string
	cred   *syscall.Credential // nil: the agent's own user
	// release is the directory the live symlink pointed at when the
	// instance was first started.
	release string

	started        chan struct{} // closed after the first start attempt
	stopCh, killCh chan struct{}
	stopOnce       sync.Once
	killOnce       sync.Once
	done           chan struct{}

	mu       sync.Mutex
	running  bool
	pid      int
	starts   int
	exits    int
	lastExit string
	startErr error
	output   []string // last lines, for errors
}

func (p *proc) stop() { p.stopOnce.Do(func() { close(p.stopCh) }) }
func (p *proc) kill() { p.stop(); p.killOnce.Do(func() { close(p.killCh) }) }

func (p *proc) up() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.running
}

func (p *proc) explain(cause error) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	state := fmt.Sprintf("started %d times, exited %d times", p.starts, p.exits)
	if p.lastExit != "" {
		state += ", last: " + p.lastExit
	}
	return fmt.Errorf("worker %s instance on port %d (pid %d) not healthy: %w; %s%s",
		p.worker, p.port, p.pid, cause, state, formatOutput(slices.Clone(p.output)))
}

func (p *proc) run() {
	defer close(p.done)
	delay := p.cfg.BackoffMin
	first := true
	for {
		began := time.Now()
		err := p.runOnce(first)
		first = false
		select {
		case <-p.stopCh:
			return
		default:
		}
		if time.Since(began) >= p.cfg.BackoffReset {
			delay = p.cfg.BackoffMin
		}
		p.log.Warn("worker instance exited; restarting it", "err", err, "in", delay)
		t := time.NewTimer(delay)
		select {
		case <-p.stopCh:
			t.Stop()
			return
		case <-t.C:
		}
		delay = min(2*delay, p.cfg.BackoffMax)
	}
}

// runOnce starts the process and waits until it exits or a stop is asked.
func (p *proc) runOnce(first bool) error {
	stdout, stderr := &lineLog{p: p, stream: "stdout"}, &lineLog{p: p, stream: "stderr"}
	cmd := exec.Command(p.argv[0], p.argv[1:]...)
	cmd.Dir, cmd.Env = p.dir, p.env
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Credential: p.cred}
	cmd.WaitDelay = time.Second // a grandchild holding the output open
	err := cmd.Start()
	p.mu.Lock()
	p.starts++
	p.startErr = err
	if err == nil {
		p.running, p.pid = true, cmd.Process.Pid
	} else {
		p.exits++
		p.lastExit = err.Error()
	}
	p.mu.Unlock()
	if first {
		close(p.started)
	}
	if err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err = <-exited:
	case <-p.stopCh:
		pgid := cmd.Process.Pid
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		t := time.NewTimer(p.cfg.StopTimeout)
		select {
		case err = <-exited:
		case <-t.C:
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			err = <-exited
		case <-p.killCh:
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			err = <-exited
		}
		t.Stop()
	}
	stdout.flush()
	stderr.flush()
	p.mu.Lock()
	p.running = false
	p.exits++
	p.lastExit = describeExit(err)
	p.mu.Unlock()
	return err
}

func describeExit(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return "killed by signal " + ws.Signal().String()
		}
		return "exit status " + strconv.Itoa(ee.ExitCode())
	}
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// lineLog logs a process's output one line at a time and keeps the last
// lines for error messages.
type lineLog struct {
	p      *proc
	stream string
	buf    []byte
}

func (l *lineLog) Write(b []byte) (int, error) {
	l.buf = append(l.buf, b...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		l.line(string(l.buf[:i]))
		l.buf = l.buf[i+1:]
	}
	if len(l.buf) > 64<<10 { // a very long line: log it in pieces
		l.line(string(l.buf))
		l.buf = nil
	}
	return len(b), nil
}

func (l *lineLog) flush() {
	if len(l.buf) > 0 {
		l.line(string(l.buf))
		l.buf = nil
	}
}

func (l *lineLog) line(s string) {
	l.p.log.Info("worker output", "stream", l.stream, "line", s)
	l.p.mu.Lock()
	l.p.output = append(l.p.output, s)
	if len(l.p.output) > 10 {
		l.p.output = l.p.output[len(l.p.output)-10:]
	}
	l.p.mu.Unlock()
}

// readEnvFile reads KEY=value lines of an optional environment file, like
// systemd's EnvironmentFile=-: a missing file is no error, blank lines and
// # or ; comments are skipped, one pair of surrounding quotes is removed.
func readEnvFile(path string) []string {
	if path == "" {
		return nil
	}
	b, err := os.ReadFile(filepath.Clean(path))
	if err != nil {
		return nil
	}
	var env []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		env = append(env, k+"="+v)
	}
	return env
}

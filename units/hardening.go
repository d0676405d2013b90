package units

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/drover-dev/drover/internal/layout"
	"github.com/drover-dev/drover/internal/sandbox"
	"github.com/drover-dev/drover/spec"
)

// Resource limits a worker gets unless its spec says otherwise: one worker
// must not starve nginx, PostgreSQL, Redis and the agent on a small VM.
const (
	DefaultMemoryMax = "512M"
	DefaultTasksMax  = 256
)

// MetadataAddr is the cloud metadata service no worker reaches
// (sandbox.MetadataAddr).
const MetadataAddr = sandbox.MetadataAddr

// hardening writes the sandbox of a worker's instances: what a Node.js (or
// any plain network service) needs and nothing more, so that a compromised
// worker is not the node. It keeps what such a worker needs: a JIT (no
// MemoryDenyWriteExecute), outbound TCP and UDP (DNS), its port, its own
// bundle read-only and its data dirs.
//
// Each worker sees only its own bundle of the state dir: the state dir
// (releases, git, journal, units.json) is an empty read-only tmpfs in its
// namespace, with its own bundle bound back in at the same path, resolved
// through the live symlink when the instance starts (as its working
// directory always was). /etc/drover (node.yaml, secrets) is inaccessible;
// the worker's environment file is read by systemd before the sandbox is
// set up.
func hardening(b *strings.Builder, w spec.Worker, liveDir string) error {
	stateDir := stateDirOf(liveDir)
	bundle := layout.WorkerDir(liveDir, w.Name)
	memMax := DefaultMemoryMax
	if w.MemoryMax != "" {
		memMax = w.MemoryMax
	}
	if err := checkSize(memMax); err != nil {
		return fmt.Errorf("worker %s: memoryMax: %w", w.Name, err)
	}
	tasks := DefaultTasksMax
	if w.TasksMax != 0 {
		tasks = w.TasksMax
	}
	if tasks < 1 {
		return fmt.Errorf("worker %s: tasksMax %d is not positive", w.Name, tasks)
	}
	lines := []string{
		"# Sandbox: see units/hardening.go.",
		"TemporaryFileSystem=" + quote(stateDir) + ":ro",
		"BindReadOnlyPaths=" + quote(bundle),
		"InaccessiblePaths=-" + quote(sandbox.EtcDir),
	}
	lines = append(lines, sandbox.Settings()...)
	lines = append(lines, "MemoryMax="+memMax, "TasksMax="+strconv.Itoa(tasks))
	for _, l := range lines {
		b.WriteString(l + "\n")
	}
	return nil
}

// checkSize accepts what systemd's MemoryMax= takes that a spec may
// sensibly ask: bytes with an optional K, M, G or T suffix, or infinity.
func checkSize(s string) error {
	if s == "infinity" {
		return nil
	}
	n := strings.TrimRight(s, "KMGT")
	if len(s)-len(n) > 1 || n == "" || strings.Trim(n, "0123456789") != "" || len(n) > 15 {
		return fmt.Errorf("%q is not a size such as 512M", s)
	}
	return nil
}

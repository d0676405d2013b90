package units

import (
	"fmt"
	"maps"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/drover-dev/drover/internal/layout"
	"github.com/drover-dev/drover/spec"
)

// managedHeader starts every file drover writes into the units directory;
// drover removes only files that carry it.
const managedHeader = "# Managed by drover: rewritten on every release, do not edit.\n"

// Unit settings drover fixes for every worker.
const (
	restartSec     = "1s"
	timeoutStopSec = "30s"
	// At most 10 starts in 60s: a crash-looping instance ends up failed
	// (and Apply resets it before restarting it onto another release).
	startLimitBurst    = 10
	startLimitInterval = "60s"
)

// TemplateName is the file name of worker's template unit; its instances are
// named by port: drover-api@3000.service is the instance on port 3000.
func TemplateName(worker string) string { return "drover-" + worker + "@.service" }

// InstanceName is the unit of worker's instance on port.
func InstanceName(worker string, port int) string {
	return "drover-" + worker + "@" + strconv.Itoa(port) + ".service"
}

// TargetName is the unit that groups worker's instances and starts them at
// boot.
func TargetName(worker string) string { return "drover-" + worker + ".target" }

// Render returns the unit files of w, by file name: the template unit and the
// target. liveDir is the live release symlink as systemd sees it.
//
// Decisions the files encode:
//   - Instances are named by port, so `Environment=PORT=%i` gives each its
//     port without a wrapper, and a changed port is a new instance.
//   - ExecStart is prefixed with ':' (no $VAR expansion) and every word is
//     double-quoted with \ and " escaped and % doubled, so each argument
//     reaches the process byte for byte. Environment= values are quoted the
//     same way ($ is never expanded there). A PORT set in the environment
//     file overrides drover's (systemd lets EnvironmentFile= win): don't.
//   - With w.User the instances run as that existing user, which must own
//     the data dirs. Without it they run as a dynamic user named
//     drover-<worker>, shared by the instances; a data dir under /var/lib
//     becomes a StateDirectory= (created and owned for that user by systemd,
//     persistent), any other data dir is only made writable (ReadWritePaths=)
//     and must already be writable by the worker.
//   - Hardening (hardening.go): no capabilities, a system-service syscall
//     filter, only its own bundle of the state dir, no /etc/drover, no
//     cloud metadata address, MemoryMax and TasksMax (spec defaults or the
//     worker's own); ProtectSystem=strict with the data dirs excepted.
//   - Restart=on-failure after 1s; output goes to the journal as
//     drover-<worker>.
func Render(w spec.Worker, liveDir string) (map[string][]byte, error) {
	if err := checkWorkers([]spec.Worker{w}); err != nil {
		return nil, err
	}
	if !path.IsAbs(liveDir) {
		return nil, fmt.Errorf("worker %s: live dir %q is not absolute", w.Name, liveDir)
	}
	if err := checkText("live dir", liveDir); err != nil {
		return nil, fmt.Errorf("worker %s: %w", w.Name, err)
	}
	bundle := layout.WorkerDir(liveDir, w.Name)
	exe := program(w.Exec[0], bundle)
	if strings.ContainsAny(exe, "\"'\\") {
		return nil, fmt.Errorf("worker %s: exec[0] %q contains a quote or backslash, which systemd refuses in an executable path", w.Name, w.Exec[0])
	}
	for i, a := range w.Exec {
		if err := checkText(fmt.Sprintf("exec[%d]", i), a); err != nil {
			return nil, fmt.Errorf("worker %s: %w", w.Name, err)
		}
	}

	var b strings.Builder
	b.WriteString(managedHeader)
	b.WriteString("# One instance per port: drover-" + w.Name + "@<port>.service listens on PORT=<port>.\n")
	b.WriteString("[Unit]\n")
	b.WriteString("Description=drover worker " + w.Name + " on port %i\n")
	b.WriteString("PartOf=" + TargetName(w.Name) + "\n")
	b.WriteString("After=network.target\n")
	fmt.Fprintf(&b, "StartLimitIntervalSec=%s\nStartLimitBurst=%d\n", startLimitInterval, startLimitBurst)
	b.WriteString("\n[Service]\n")
	b.WriteString("Type=exec\n")
	b.WriteString("WorkingDirectory=" + escapeSpecifiers(bundle) + "\n")
	words := []string{quote(exe)}
	for _, a := range w.Exec[1:] {
		words = append(words, quote(a))
	}
	b.WriteString("ExecStart=:" + strings.Join(words, " ") + "\n")
	for _, k := range slices.Sorted(maps.Keys(w.Env)) {
		if err := checkText("env "+k, w.Env[k]); err != nil {
			return nil, fmt.Errorf("worker %s: %w", w.Name, err)
		}
		if !envKeyOK(k) || k == "PORT" {
			return nil, fmt.Errorf("worker %s: %q is not an environment variable drover can set", w.Name, k)
		}
		b.WriteString("Environment=" + quote(k+"="+w.Env[k]) + "\n")
	}
	b.WriteString("Environment=PORT=%i\n")
	if w.EnvironmentFile != "" {
		if err := checkPath("environmentFile", w.EnvironmentFile); err != nil {
			return nil, fmt.Errorf("worker %s: %w", w.Name, err)
		}
		b.WriteString("EnvironmentFile=-" + escapeSpecifiers(w.EnvironmentFile) + "\n")
	}
	if w.SecretEnv != "" {
		// Decrypted into the release by prepare; required (no '-').
		b.WriteString("EnvironmentFile=" + escapeSpecifiers(layout.SecretsEnvFile(liveDir, w.Name)) + "\n")
	}
	var stateDirs, rwPaths []string
	for _, d := range w.DataDirs {
		if err := checkPath("dataDir", d); err != nil {
			return nil, fmt.Errorf("worker %s: %w", w.Name, err)
		}
		if rel, ok := strings.CutPrefix(d, "/var/lib/"); ok && w.User == "" {
			stateDirs = append(stateDirs, quote(rel))
		} else {
			rwPaths = append(rwPaths, quote(d))
		}
	}
	if w.User != "" {
		if !userOK(w.User) {
			return nil, fmt.Errorf("worker %s: %q is not a user name", w.Name, w.User)
		}
		b.WriteString("User=" + w.User + "\n")
	} else {
		b.WriteString("DynamicUser=yes\nUser=drover-" + w.Name + "\n")
	}
	if len(stateDirs) > 0 {
		b.WriteString("StateDirectory=" + strings.Join(stateDirs, " ") + "\n")
	}
	b.WriteString("Restart=on-failure\nRestartSec=" + restartSec + "\n")
	b.WriteString("TimeoutStopSec=" + timeoutStopSec + "\nKillMode=mixed\n")
	b.WriteString("SyslogIdentifier=drover-" + w.Name + "\n")
	if err := hardening(&b, w, liveDir); err != nil {
		return nil, err
	}
	if len(rwPaths) > 0 {
		b.WriteString("ReadWritePaths=" + strings.Join(rwPaths, " ") + "\n")
	}

	var t strings.Builder
	t.WriteString(managedHeader)
	t.WriteString("[Unit]\n")
	ports := strconv.Itoa(w.Port)
	if w.Instances > 1 {
		ports = fmt.Sprintf("ports %d-%d", w.Port, w.Port+w.Instances-1)
	} else {
		ports = "port " + ports
	}
	fmt.Fprintf(&t, "Description=drover worker %s (%s)\n", w.Name, ports)
	var wants []string
	for _, p := range w.InstancePorts() {
		wants = append(wants, InstanceName(w.Name, p))
	}
	t.WriteString("Wants=" + strings.Join(wants, " ") + "\n")
	t.WriteString("\n[Install]\nWantedBy=multi-user.target\n")

	return map[string][]byte{
		TemplateName(w.Name): []byte(b.String()),
		TargetName(w.Name):   []byte(t.String()),
	}, nil
}

// quote renders s as one word that systemd unquotes and C-unescapes, then
// expands specifiers in: the result is s again.
func quote(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '\\':
			b.WriteString(`\\`)
		case '"':
			b.WriteString(`\"`)
		case '%':
			b.WriteString("%%")
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// escapeSpecifiers is for settings systemd takes as a whole path, without
// unquoting: only specifiers need escaping.
func escapeSpecifiers(s string) string { return strings.ReplaceAll(s, "%", "%%") }

// checkText refuses control characters: a newline would end the setting and
// start another one.
func checkText(what, s string) error {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%s %q contains a control character", what, s)
		}
	}
	return nil
}

func checkPath(what, p string) error {
	if err := checkText(what, p); err != nil {
		return err
	}
	if !path.IsAbs(p) || path.Clean(p) != p {
		return fmt.Errorf("%s %q is not a clean absolute path", what, p)
	}
	return nil
}

func envKeyOK(k string) bool {
	if k == "" {
		return false
	}
	for i, r := range k {
		if !(r == '_' || r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || i > 0 && r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

func userOK(u string) bool {
	for i, r := range u {
		if !(r == '_' || r >= 'a' && r <= 'z' || i > 0 && (r == '-' || r >= '0' && r <= '9')) {
			return false
		}
	}
	return u != "" && len(u) <= 32
}

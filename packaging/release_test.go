// Package packaging holds what `make release` puts into drover's Debian
// packages (the maintainer scripts, node.yaml.example, lintian overrides);
// scripts/release.sh builds them. Its test runs that build and inspects the
// packages with Debian's own tools.
package packaging

import (
	"bytes"
	"context"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/spec"
)

const testVersion = "v0.9.1"

// TestReleaseBuildsCleanPackages runs scripts/release.sh as `make release`
// does and checks what a node would install: both architectures' static
// binaries carry the version, each .deb holds the binary, the unit (pointed
// at /usr/bin and waiting for node.yaml), the example config as a conffile,
// the state dir and the man page, depends on nginx and recommends git, and
// lintian reports no error; SHA256SUMS verifies.
func TestReleaseBuildsCleanPackages(t *testing.T) {
	for _, tool := range []string{"dpkg-deb", "lintian", "sha256sum"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed: run `make setup`", tool)
		}
	}
	dist := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	run(t, ctx, "..", []string{"DIST=" + dist, "VERSION=" + testVersion}, "bash", "scripts/release.sh")
	t.Logf("release.sh took %s", time.Since(start).Round(time.Second))

	debVersion := strings.TrimPrefix(testVersion, "v")
	machines := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}
	var debs []string
	for arch, machine := range machines {
		bin := filepath.Join(dist, "drover_"+testVersion+"_linux_"+arch)
		checkStatic(t, bin, machine)
		deb := filepath.Join(dist, "drover_"+debVersion+"_"+arch+".deb")
		debs = append(debs, deb)
		fi, err := os.Stat(deb)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %d bytes", filepath.Base(deb), fi.Size())

		fields := map[string]string{"Package": "drover", "Version": debVersion, "Architecture": arch, "Depends": "nginx", "Recommends": "git"}
		for f, want := range fields {
			if got := run(t, ctx, "", nil, "dpkg-deb", "--field", deb, f); got != want {
				t.Errorf("%s: %s is %q, want %q", filepath.Base(deb), f, got, want)
			}
		}
		info := run(t, ctx, "", nil, "dpkg-deb", "--info", deb)
		for _, want := range []string{"conffiles", "postinst", "prerm", "postrm", "md5sums"} {
			if !strings.Contains(info, want) {
				t.Errorf("%s: dpkg-deb --info lists no %s:\n%s", filepath.Base(deb), want, info)
			}
		}
		contents := run(t, ctx, "", nil, "dpkg-deb", "--contents", deb)
		for path, mode := range map[string]string{
			"./usr/bin/drover":                    "-rwxr-xr-x root/root",
			"./lib/systemd/system/drover.service": "-rw-r--r-- root/root",
			"./etc/drover/node.yaml.example":      "-rw-r--r-- root/root",
			"./var/lib/drover/":                   "drwxr-xr-x root/root",
			"./usr/share/man/man1/drover.1.gz":    "-rw-r--r-- root/root",
			"./usr/share/doc/drover/copyright":    "-rw-r--r-- root/root",
		} {
			if !hasEntry(contents, path, mode) {
				t.Errorf("%s: no %s %s in:\n%s", filepath.Base(deb), mode, path, contents)
			}
		}
		if strings.Contains(contents, "/etc/systemd/system/multi-user.target.wants") {
			t.Errorf("%s enables the unit at install; it must wait for drover init", filepath.Base(deb))
		}
		ctrl := extract(t, ctx, deb, "--ctrl-tarfile", "./conffiles")
		if strings.TrimSpace(ctrl) != "/etc/drover/node.yaml.example" {
			t.Errorf("conffiles = %q", ctrl)
		}
		if post := extract(t, ctx, deb, "--ctrl-tarfile", "./postinst"); !strings.Contains(post, "drover idle --wait") {
			t.Errorf("postinst restarts the agent without waiting for it to be idle:\n%s", post)
		}
		unit := extract(t, ctx, deb, "--fsys-tarfile", "./lib/systemd/system/drover.service")
		for _, want := range []string{"\nExecStart=/usr/bin/drover agent --config /etc/drover/node.yaml\n", "\nConditionPathExists=/etc/drover/node.yaml\n", "\nType=notify\n", "\nProtectSystem=full\n"} {
			if !strings.Contains(unit, want) {
				t.Errorf("packaged unit has no %q:\n%s", strings.TrimSpace(want), unit)
			}
		}
		man := run(t, ctx, "", nil, "sh", "-c", "dpkg-deb --fsys-tarfile "+deb+" | tar -xO ./usr/share/man/man1/drover.1.gz | gzip -dc")
		for _, want := range []string{".TH DROVER 1", ".SS init", ".SS doctor", "\\-\\-name"} {
			if !strings.Contains(man, want) {
				t.Errorf("man page has no %q", want)
			}
		}
	}
	if out := run(t, ctx, "", nil, filepath.Join(dist, "drover_"+testVersion+"_linux_amd64"), "version"); out != "drover "+testVersion {
		t.Errorf("drover version = %q, want drover %s", out, testVersion)
	}

	// lintian: errors fail the test; warnings are listed.
	cmd := exec.CommandContext(ctx, "lintian", append([]string{"--fail-on", "error"}, debs...)...)
	out, err := cmd.CombinedOutput()
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "E: ") {
			t.Errorf("lintian: %s", line)
		} else if strings.HasPrefix(line, "W: ") {
			t.Logf("lintian: %s", line)
		}
	}
	if err != nil {
		t.Errorf("lintian --fail-on error: %v\n%s", err, out)
	}

	hostDeb := filepath.Join(dist, "drover_"+debVersion+"_"+runtime.GOARCH+".deb")
	t.Run("InstallAndUpgradeInASystemdNode", func(t *testing.T) { testInstallAndUpgrade(t, hostDeb) })
	t.Run("FreshNodeInstallsInitsPassesDoctorServes", func(t *testing.T) { testFreshNode(t, hostDeb) })

	sums := run(t, ctx, dist, nil, "sha256sum", "-c", "SHA256SUMS")
	if n := strings.Count(sums, ": OK"); n != 4 {
		t.Errorf("sha256sum -c SHA256SUMS checked %d files, want 4 (2 binaries, 2 packages):\n%s", n, sums)
	}
}

// TestNodeExampleIsValid: the example the package installs parses as a
// node.yaml, so copying it is a valid start.
func TestNodeExampleIsValid(t *testing.T) {
	data, err := os.ReadFile("node.yaml.example")
	if err != nil {
		t.Fatal(err)
	}
	n, err := spec.ParseNode("node.yaml.example", data, "/etc/drover")
	if err != nil {
		t.Fatal(err)
	}
	if n.LB.Driver != "digitalocean" || n.Cluster == nil || len(n.Cluster.SentinelAddrs) != 3 {
		t.Errorf("the example lost its point: %+v", n)
	}
}

func checkStatic(t *testing.T, bin string, machine elf.Machine) {
	t.Helper()
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Machine != machine {
		t.Errorf("%s is for %s, want %s", bin, f.Machine, machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s has a program interpreter: not static (CGO_ENABLED=0)", bin)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("%s needs %v", bin, libs)
	}
}

func hasEntry(contents, path, mode string) bool {
	for _, line := range strings.Split(contents, "\n") {
		if f := strings.Fields(line); len(f) >= 6 && f[len(f)-1] == path && strings.HasPrefix(line, mode) {
			return true
		}
	}
	return false
}

// extract returns one file of a package's control (--ctrl-tarfile) or data
// (--fsys-tarfile) archive.
func extract(t *testing.T, ctx context.Context, deb, archive, name string) string {
	t.Helper()
	return run(t, ctx, "", nil, "sh", "-c", "dpkg-deb "+archive+" "+deb+" | tar -xO "+name)
}

func run(t *testing.T, ctx context.Context, dir string, env []string, argv ...string) string {
	t.Helper()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\n%s%s", strings.Join(argv, " "), err, out.String(), errb.String())
	}
	return strings.TrimSpace(out.String())
}

// TestDebVersion: git describe's forms become Debian versions that start
// with a digit and sort as the releases do; an untagged commit id (even one
// that starts with a digit) sorts below every tagged release.
func TestDebVersion(t *testing.T) {
	ctx := context.Background()
	for v, want := range map[string]string{
		"v1.2.3": "1.2.3", "v1.2.3-4-gabc123": "1.2.3+4.gabc123", "v1.2.3-dirty": "1.2.3+dirty",
		"74faf81": "0~git20251124160000.74faf81", "e4a5b40-dirty": "0~git20251124160000.e4a5b40+dirty",
	} {
		got := run(t, ctx, "..", []string{"SOURCE_DATE_EPOCH=1764000000"}, "bash", "-c",
			`source <(sed -n '/^deb_version()/,/^}/p' scripts/release.sh) && deb_version "$0"`, v)
		if got != want {
			t.Errorf("deb_version %s = %q, want %q", v, got, want)
		}
	}
	for _, pair := range [][2]string{{"0~git20251124160000.74faf81", "0.0.1"}, {"1.2.3", "1.2.3+4.gabc123"}, {"1.2.3+4.gabc123", "1.2.4"}} {
		run(t, ctx, "", nil, "dpkg", "--compare-versions", pair[0], "lt", pair[1])
	}
}

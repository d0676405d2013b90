package units

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/spec"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func baseWorker() spec.Worker {
	return spec.Worker{
		Name:      "feedback-api",
		Exec:      []string{"/usr/local/bin/node", "server.js"},
		Instances: 2,
		Port:      3000,
		Env:       map[string]string{"NODE_ENV": "production", "LOG_LEVEL": "info"},
		Health: spec.Health{Path: "/healthz", Status: 200, Successes: 3,
			Interval: spec.Duration(time.Second), Timeout: spec.Duration(2 * time.Second)},
	}
}

func TestRenderGolden(t *testing.T) {
	hostile := baseWorker()
	hostile.Name = "hostile"
	hostile.Instances = 1
	hostile.Exec = []string{"bin/my server", `a"b`, `back\slash`, "100%", "%i %n", "$HOME ${PORT} $$", ";", `\;`, "'single'", "-x", "tab\u00e9"}
	hostile.Env = map[string]string{"QUOTE": `say "hi"`, "PCT": "%i%%", "DOLLAR": "$PATH", "BS": `C:\dir\`, "SPACE": " lead and trail "}

	withUser := baseWorker()
	withUser.Name = "jobs"
	withUser.Exec = []string{"node", "jobs.js", "--queue", "default"}
	withUser.Instances = 1
	withUser.Port = 4000
	withUser.User = "jobs"
	withUser.EnvironmentFile = "/etc/drover/env/jobs/jobs.env"
	withUser.DataDirs = []string{"/var/lib/drover-data/jobs", "/var/lib/drover-data/jobs/uploads"}
	withUser.MemoryMax, withUser.TasksMax = "1G", 64

	dynamicData := baseWorker()
	dynamicData.Name = "cache"
	dynamicData.Instances = 3
	dynamicData.Port = 5000
	dynamicData.Env = nil
	dynamicData.DataDirs = []string{"/var/lib/drover-data/cache/blobs", "/srv/shared"}

	for name, w := range map[string]spec.Worker{"basic": baseWorker(), "hostile": hostile, "user": withUser, "statedir": dynamicData} {
		t.Run(name, func(t *testing.T) {
			files, err := Render(w, "/var/lib/drover/current")
			if err != nil {
				t.Fatal(err)
			}
			if len(files) != 2 {
				t.Fatalf("got %d files, want a template and a target", len(files))
			}
			for file, got := range files {
				golden := filepath.Join("testdata", name+"."+strings.TrimPrefix(filepath.Ext(file), "."))
				if *update {
					if err := os.WriteFile(golden, got, 0o644); err != nil {
						t.Fatal(err)
					}
					continue
				}
				want, err := os.ReadFile(golden)
				if err != nil {
					t.Fatalf("%v (run go test -update to create it)", err)
				}
				if string(got) != string(want) {
					t.Errorf("%s differs from %s:\n--- got\n%s\n--- want\n%s", file, golden, got, want)
				}
			}
		})
	}
}

func TestRenderRefuses(t *testing.T) {
	for name, mutate := range map[string]func(*spec.Worker){
		"newline in arg":        func(w *spec.Worker) { w.Exec = append(w.Exec, "a\nExecStartPre=/bin/evil") },
		"newline in env":        func(w *spec.Worker) { w.Env["X"] = "1\n[Service]" },
		"quote in program":      func(w *spec.Worker) { w.Exec[0] = `/usr/bin/a"b` },
		"bad env key":           func(w *spec.Worker) { w.Env["A B"] = "x" },
		"PORT in env":           func(w *spec.Worker) { w.Env["PORT"] = "1" },
		"bad name":              func(w *spec.Worker) { w.Name = "Api@x" },
		"relative env file":     func(w *spec.Worker) { w.EnvironmentFile = "secrets.env" },
		"newline in env file":   func(w *spec.Worker) { w.EnvironmentFile = "/etc/x\nUser=root" },
		"data dir not absolute": func(w *spec.Worker) { w.DataDirs = []string{"data"} },
		"bad user":              func(w *spec.Worker) { w.User = "root\nUser=x" },
		"no exec":               func(w *spec.Worker) { w.Exec = nil },
	} {
		t.Run(name, func(t *testing.T) {
			w := baseWorker()
			mutate(&w)
			if files, err := Render(w, "/var/lib/drover/current"); err == nil {
				t.Fatalf("Render accepted it:\n%s", files[TemplateName(w.Name)])
			}
		})
	}
	if _, err := Render(baseWorker(), "relative/current"); err == nil {
		t.Error("Render accepted a relative live dir")
	}
}

func TestQuote(t *testing.T) {
	for in, want := range map[string]string{
		"plain":       `"plain"`,
		`a"b\c`:       `"a\"b\\c"`,
		"50% %i":      `"50%% %%i"`,
		"$X ${Y} $$":  `"$X ${Y} $$"`,
		"with space ": `"with space "`,
	} {
		if got := quote(in); got != want {
			t.Errorf("quote(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestProgram(t *testing.T) {
	for in, want := range map[string]string{
		"/usr/bin/node": "/usr/bin/node",
		"node":          "node",
		"bin/server":    "/b/bin/server",
		"./server.js":   "/b/server.js",
		"-x":            "/b/-x",
		"../escape":     "/escape",
	} {
		if got := program(in, "/b"); got != want {
			t.Errorf("program(%q) = %q, want %q", in, got, want)
		}
	}
}

package plan

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/drover-dev/drover/internal/layout"
	"github.com/drover-dev/drover/secrets"
	"github.com/drover-dev/drover/spec"
)

// idFS is a tree that names its files' content, as gitsource's does.
type idFS struct{ fstest.MapFS }

func (f idFS) ContentID(name string) (string, error) {
	file, ok := f.MapFS[name]
	if !ok {
		return "", fs.ErrNotExist
	}
	sum := sha256.Sum256(file.Data)
	return hex.EncodeToString(sum[:8]), nil
}

func file(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s), Mode: 0o644} }

func TestDiffNamed(t *testing.T) {
	type item struct{ name, v string }
	old := []item{{"blog", "1"}, {"app", "1"}, {"docs", "1"}}
	new := []item{{"shop", "1"}, {"blog", "2"}, {"app", "1"}}
	got := diffNamed(old, new, func(i item) string { return i.name }, func(a, b item) []string {
		if a.v != b.v {
			return []string{"settings"}
		}
		return nil
	})
	want := []Change{
		{Name: "app", Action: "keep"},
		{Name: "blog", Action: "change", What: []string{"settings"}},
		{Name: "docs", Action: "remove"},
		{Name: "shop", Action: "add"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("diffNamed = %+v\nwant %+v", got, want)
	}
}

func TestFileIDs(t *testing.T) {
	tree := idFS{fstest.MapFS{
		"sites/blog/index.html": file("hi"),
		"sites/blog/bin/run":    {Data: []byte("#!/bin/sh"), Mode: 0o755},
		"sites/blog/latest":     {Data: []byte("index.html"), Mode: 0o777 | fs.ModeSymlink},
		"sites/other/x":         file("x"),
	}}
	ids, err := fileIDs(tree, "sites/blog")
	if err != nil {
		t.Fatal(err)
	}
	hi, _ := tree.ContentID("sites/blog/index.html")
	run, _ := tree.ContentID("sites/blog/bin/run")
	want := map[string]string{"index.html": hi + " 644", "bin/run": run + " 755", "latest": "-> index.html"}
	if !reflect.DeepEqual(ids, want) {
		t.Errorf("fileIDs = %v, want %v", ids, want)
	}
	if _, err := fileIDs(tree.MapFS, "sites/blog"); err == nil {
		t.Error("a tree without content ids compared")
	}
}

func TestDiffContent(t *testing.T) {
	oldTree := idFS{fstest.MapFS{
		"sites/blog/index.html": file("v1"),
		"sites/blog/about.html": file("about"),
		"sites/blog/old.html":   file("gone"),
		"sites/blog/run":        file("#!/bin/sh"),
	}}
	old, err := fileIDs(oldTree, "sites/blog")
	if err != nil {
		t.Fatal(err)
	}
	newTree := idFS{fstest.MapFS{
		"sites/blog/index.html": file("v2"), // content changed
		"sites/blog/about.html": file("about"),
		"sites/blog/new.html":   file("new"),
		"sites/blog/run":        {Data: []byte("#!/bin/sh"), Mode: 0o755}, // mode changed
	}}
	pin := func(sum string) *spec.Artifact {
		return &spec.Artifact{URL: "https://example.com/a.tar.gz", SHA256: sum}
	}
	for _, c := range []struct {
		name           string
		tree           fs.FS
		oldArt, newArt *spec.Artifact
		settings       bool
		want           []string
	}{
		{"same files", oldTree, nil, nil, false, nil},
		{"files changed", newTree, nil, nil, false, []string{"files: 1 added, 2 changed, 1 removed"}},
		{"settings and files", newTree, nil, nil, true, []string{"settings", "files: 1 added, 2 changed, 1 removed"}},
		{"no content ids", oldTree.MapFS, nil, nil, false, []string{"files (could not compare: no content ids)"}},
		{"same pin", oldTree, pin("aa"), pin("aa"), false, nil},
		{"pin changed", oldTree, pin("aa"), pin("bb"), false, []string{"artifact"}},
		{"pin added", oldTree, nil, pin("bb"), false, []string{"artifact"}},
		{"pin removed", oldTree, pin("aa"), nil, false, []string{"artifact"}},
	} {
		if got := diffContent(old, c.tree, "sites/blog", c.oldArt, c.newArt, c.settings); !slices.Equal(got, c.want) {
			t.Errorf("%s: diffContent = %q, want %q", c.name, got, c.want)
		}
	}
}

func TestLineDiff(t *testing.T) {
	a := "http {\n  server blog;\n  listen 80;\n}"
	b := "http {\n  server blog;\n  server shop;\n  listen 8080;\n}"
	// On a tie the addition comes first, as drover plan has always shown.
	want := []string{"+   server shop;", "+   listen 8080;", "-   listen 80;"}
	if got := lineDiff(a, b); !slices.Equal(got, want) {
		t.Errorf("lineDiff = %q, want %q", got, want)
	}
	if got := lineDiff(a, a); got != nil {
		t.Errorf("lineDiff of equal configs = %q", got)
	}
	if got := lineDiff("", "a\nb"); !slices.Equal(got, []string{"+ a", "+ b"}) {
		t.Errorf("lineDiff from nothing = %q", got)
	}
}

const liveSpec = `version: 1
sites:
  - {name: blog, source: sites/blog, serverNames: [blog.example.com]}
  - name: docs
    serverNames: [docs.example.com]
    source: sites/docs
workers:
  - name: api
    secretEnv: secrets/api.age
    instances: 2
    exec: [node, server.js]
    health: {path: /healthz}
    port: 3000
    source: workers/api
`

// TestMake plans a revision against a live release kept in a temporary
// state directory: a site removed, one added, one whose file changed, a
// worker whose setting and secret changed, and the nginx config's lines.
func TestMake(t *testing.T) {
	state := t.TempDir()
	const live, next = "1111111111111111111111111111111111111111", "2222222222222222222222222222222222222222"
	release := filepath.Join(state, "releases", live)
	if err := os.MkdirAll(release, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(release, spec.FileName), []byte(liveSpec), 0o644); err != nil {
		t.Fatal(err)
	}
	old := secrets.Vars{{Key: "API_TOKEN", Value: "tok-1"}, {Key: "DB_URL", Value: "postgres://db"}}
	if err := secrets.WriteEnvFile(layout.SecretsEnvFile(release, "api"), old, -1, -1); err != nil {
		t.Fatal(err)
	}
	oldTree := idFS{fstest.MapFS{
		"sites/blog/index.html": file("v1"),
		"sites/docs/index.html": file("docs"),
		"workers/api/server.js": file("js"),
	}}
	sourceIDs := func(dir, rev string) (map[string]map[string]string, error) {
		if dir != state || rev != live {
			t.Errorf("SourceIDs(%q, %q)", dir, rev)
		}
		ids := map[string]map[string]string{}
		for _, tr := range []string{"sites/blog", "sites/docs", "workers/api"} {
			m, err := fileIDs(oldTree, tr)
			if err != nil {
				return nil, err
			}
			ids[tr] = m
		}
		return ids, nil
	}
	newSpec := strings.NewReplacer(
		"  - name: docs\n    serverNames: [docs.example.com]\n    source: sites/docs\n",
		"  - name: shop\n    serverNames: [shop.example.com]\n    source: sites/shop\n",
		"instances: 2", "instances: 3").Replace(liveSpec)
	tree := idFS{fstest.MapFS{
		spec.FileName:           file(newSpec),
		"sites/blog/index.html": file("v2"),
		"sites/shop/index.html": file("shop"),
		"workers/api/server.js": file("js"),
		"secrets/api.age":       file("ciphertext"),
	}}
	render := func(sp *spec.Spec) ([]byte, error) {
		var b strings.Builder
		for _, s := range sp.Sites {
			b.WriteString("server " + s.Name + ";\n")
		}
		return []byte(b.String()), nil
	}
	decrypt := func(w spec.Worker, fsys fs.FS) (secrets.Vars, error) {
		if w.Name != "api" || w.SecretEnv != "secrets/api.age" {
			t.Errorf("Decrypt(%s, %s)", w.Name, w.SecretEnv)
		}
		if _, err := fs.Stat(fsys, w.SecretEnv); err != nil {
			return nil, err
		}
		return secrets.Vars{{Key: "API_TOKEN", Value: "tok-2"}, {Key: "DB_URL", Value: "postgres://db"}}, nil
	}
	in := Input{
		Node: "web-1", StateDir: state, Live: live, Rev: next, Tree: tree,
		Policy: spec.DefaultPolicy(), SourceIDs: sourceIDs, Render: render, Decrypt: decrypt,
	}
	p, err := Make(in)
	if err != nil {
		t.Fatal(err)
	}
	want := &Plan{
		Node: "web-1", From: live, To: next,
		Sites: []Change{
			{Name: "blog", Action: "change", What: []string{"files: 0 added, 1 changed, 0 removed"}},
			{Name: "docs", Action: "remove"},
			{Name: "shop", Action: "add"},
		},
		Workers: []Change{
			{Name: "api", Action: "change", What: []string{"settings", "secret API_TOKEN=<changed>"}},
		},
		NginxDiff: []string{"+ server shop;", "- server docs;"},
	}
	if !reflect.DeepEqual(p, want) {
		t.Errorf("Make =\n%+v\nwant\n%+v", p, want)
	}

	// Without an identity no secret is compared; a secret that does not
	// decrypt is said, not fatal; a first release is all additions.
	in.Decrypt = nil
	if p, err := Make(in); err != nil || !slices.Equal(p.Workers[0].What, []string{"settings"}) {
		t.Errorf("without Decrypt: %+v, %v", p, err)
	}
	in.Decrypt = func(spec.Worker, fs.FS) (secrets.Vars, error) { return nil, errors.New("no identity") }
	if p, err := Make(in); err != nil || !slices.Equal(p.Workers[0].What, []string{"settings", "secrets (could not compare: no identity)"}) {
		t.Errorf("failing Decrypt: %+v, %v", p, err)
	}
	in.Live, in.Decrypt = "", decrypt
	p, err = Make(in)
	if err != nil {
		t.Fatal(err)
	}
	first := []Change{{Name: "blog", Action: "add"}, {Name: "shop", Action: "add"}}
	if !reflect.DeepEqual(p.Sites, first) || p.Workers[0].Action != "add" ||
		!slices.Equal(p.NginxDiff, []string{"+ server blog;", "+ server shop;", "+ "}) {
		t.Errorf("first release: %+v", p)
	}
}

func TestMakeRefusesABadTree(t *testing.T) {
	in := Input{Tree: fstest.MapFS{spec.FileName: file("version: 1\nbogus: true\n")}, Policy: spec.DefaultPolicy()}
	if _, err := Make(in); err == nil || !strings.Contains(err.Error(), "bogus") {
		t.Errorf("Make of a bad drover.yaml: %v", err)
	}
}

package spec

import (
	"os"
	"strings"
	"testing"
	"testing/fstest"
)

// linkChain is the chain of issue 19: l, deep in d/…/d, points up to the
// root (lexically fine); x goes through l and then up again, which is
// lexically root/etc but, resolved as the kernel does, the node's /etc.
func linkChain(depth int) (l, lTarget, x, xTarget string) {
	d := strings.Repeat("d/", depth)
	l = d + "l"
	lTarget = strings.TrimSuffix(strings.Repeat("../", depth), "/")
	xTarget = l + "/" + strings.Repeat("../", depth+1) + "etc"
	return l, lTarget, "x", xTarget
}

func link(target string) *fstest.MapFile {
	return &fstest.MapFile{Data: []byte(target), Mode: 0o777 | os.ModeSymlink}
}

func TestCheckLinks(t *testing.T) {
	l, lt, x, xt := linkChain(12)
	if CheckLink(l, lt) != nil || CheckLink(x, xt) != nil {
		t.Fatal("the chain no longer passes the lexical check: this test would not show the resolver's worth")
	}
	for _, c := range []struct {
		name string
		fsys fstest.MapFS
		want string // "" when the tree is fine
	}{
		{"chain", fstest.MapFS{l: link(lt), x: link(xt)}, `x: symlink to "` + xt + `" resolves outside . (through ` + l + `)`},
		{"chain, another order", fstest.MapFS{"a/x": link("../" + l + "/../../../../../../../../../../../../../etc"), l: link(lt)}, "a/x: symlink to"},
		{"link to a link out", fstest.MapFS{"up": link(".."), "y": link("up")}, `up: symlink to ".." resolves outside`},
		{"absolute in the middle", fstest.MapFS{"zabs": link("/etc"), "y/z": link("../zabs/passwd")}, "y/z: symlink to \"../zabs/passwd\" goes through zabs, a symlink to absolute path"},
		{"loop", fstest.MapFS{"a": link("b"), "b": link("a")}, "more than 40 symlinks"},
		{"inside, through links", fstest.MapFS{"d/e/f.html": {Data: []byte("f")}, "d/up": link(".."), "latest": link("d/up/d/e/f.html"), "assets": link("d/e")}, ""},
		{"dangling", fstest.MapFS{"gone": link("nothere/../../..")}, ""},
		{"dotdot of a link to a subdir", fstest.MapFS{"d/e/x": {Data: []byte("x")}, "s": link("d/e"), "y": link("s/../e/x")}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := CheckLinks(c.fsys, ".")
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("refused a tree whose links stay inside: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("got %v, want an error with %q", err, c.want)
			}
		})
	}
}

// TestCheckTreeResolvesLinkChains: the chain inside a site's source is
// refused by CheckTree (validate and the agent) with the path named.
func TestCheckTreeResolvesLinkChains(t *testing.T) {
	s, err := Parse("drover.yaml", []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	l, lt, x, xt := linkChain(12)
	fsys := fstest.MapFS{
		"sites/blog/index.html": {Data: []byte("hi")},
		"sites/blog/" + l:       link(lt),
		"sites/blog/" + x:       link(xt),
		"workers/api/server.js": {Data: []byte("x")},
	}
	err = CheckTree("drover.yaml", s, fsys)
	if err == nil || !strings.Contains(err.Error(), "drover.yaml:5:13: sites[0].source: sites/blog/x: symlink to") || !strings.Contains(err.Error(), "resolves outside sites/blog") {
		t.Fatalf("the link chain was not refused with its path: %v", err)
	}
}

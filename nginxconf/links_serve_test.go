package nginxconf

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPlantedLinksAreNotServed: behind drover's own check of every link
// (spec.CheckLinks), nginx is told not to follow a link that someone other
// than the owner of its target left in the live release (disable_symlinks
// if_not_owner). A real nginx serves the site through a current symlink,
// as on a node; the site's own link (root's, to root's file) still works,
// and links planted by hand by another user, or to another user's file,
// are not followed.
func TestPlantedLinksAreNotServed(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test plants links owned by another user: run it as root (as the suite does)")
	}
	w := newWorld(t, appYAML, true, nil)
	// The live dir becomes what it is on a node: current -> releases/<rev>.
	rel := filepath.Join(w.dir, "releases", "r1")
	mkdir(t, filepath.Dir(rel))
	if err := os.Rename(w.p.LiveDir, rel); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("releases/r1", w.p.LiveDir); err != nil {
		t.Fatal(err)
	}
	site := filepath.Join(rel, "sites", "app")
	const nobody = 65534
	plant := func(name, target string, uid int) {
		t.Helper()
		p := filepath.Join(site, name)
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(p, uid, uid); err != nil {
			t.Fatal(err)
		}
	}
	plant("latest.html", "index.html", 0)  // the site's own link, as drover writes it
	plant("passwd", "/etc/passwd", nobody) // left by a worker, say
	plant("etc", "/etc", nobody)
	// A file of another user outside the site (a worker's data, say),
	// linked by root's link.
	secret := filepath.Join(w.dir, "secret.txt")
	writeFile(t, secret, "s3cret\n")
	if err := os.Chown(secret, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	plant("secret.txt", secret, 0)

	c := w.client(false, false)
	if resp, body := w.mustGet(c, "app.test", "/latest.html"); resp.StatusCode != 200 || body != "site app\n" {
		t.Errorf("/latest.html (the site's own link): %d %q, want 200", resp.StatusCode, body)
	}
	for _, p := range []string{"/passwd", "/etc/passwd", "/etc/hostname", "/secret.txt"} {
		resp, body := w.mustGet(c, "app.test", p)
		if resp.StatusCode == 200 || strings.Contains(body, "root:") || strings.Contains(body, "s3cret") {
			t.Errorf("%s: %d %.40q…: nginx followed a planted link out of the site", p, resp.StatusCode, body)
		}
	}
}

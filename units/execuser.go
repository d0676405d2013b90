package units

import (
	"bufio"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/drover-dev/drover/spec"
)

// execCredential is whom the exec supervisor runs w's instances as: nil for
// the agent's own user (w names none, or names the agent's), else w's user.
// A user the supervisor cannot honour is an error, never silently the
// agent's user (root, often): it does not exist here, it is root (unless
// allowRoot: the node's policy allows it), or the agent is not root and so
// cannot switch to it.
func execCredential(w *spec.Worker, allowRoot bool) (*syscall.Credential, error) {
	if w.User == "" {
		return nil, nil
	}
	u, err := user.Lookup(w.User)
	if err != nil {
		return nil, fmt.Errorf("worker %s: user %q: %w", w.Name, w.User, err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("worker %s: user %q has uid %q gid %q", w.Name, w.User, u.Uid, u.Gid)
	}
	switch euid := os.Geteuid(); {
	case uid == 0 && !allowRoot:
		return nil, fmt.Errorf("worker %s: user %q is uid 0: workers never run as root on this node (node.yaml policy.allowRoot)", w.Name, w.User)
	case int(uid) == euid:
		return nil, nil
	case euid != 0:
		return nil, fmt.Errorf("worker %s: the exec supervisor runs as uid %d and cannot run it as user %q; use the systemd supervisor, or leave user out", w.Name, euid, w.User)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
}

// refuseRootUser refuses w when the user it names is uid 0 on the node
// whose root is root ("" on a server): the spec refuses "root" by name,
// but a node may have another name for uid 0 (toor), and systemd would run
// the worker as it.
func refuseRootUser(root string, w *spec.Worker) error {
	if w.User == "" {
		return nil
	}
	f, err := os.Open(filepath.Join(root, "/etc/passwd"))
	if err != nil {
		return nil // no passwd to read: systemd will refuse an unknown user
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) > 2 && fields[0] == w.User && fields[2] == "0" {
			return fmt.Errorf("worker %s: user %q is uid 0 on this node: workers never run as root here (node.yaml policy.allowRoot)", w.Name, w.User)
		}
	}
	return nil
}

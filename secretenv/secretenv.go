// Package secretenv gives each release its workers' secretEnv files: the
// release store's decorator that decrypts them (with package secrets) and
// writes them into the release, and validate's check that they are
// encrypted. Package secrets knows age and env files only; this package
// knows where they sit in a spec, a revision's tree and a release.
//
// Errors that are the revision's fault (a file that is missing, does not
// decrypt or collides with env; a node without an identity to decrypt it)
// are *RevisionError, whose RevisionFault() reconcile.IsBadRevision
// recognizes, so the revision halts; an identity file that cannot be used is
// this node's fault and stays plain, so the rollout retries.
package secretenv

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path"
	"path/filepath"
	"strconv"

	"github.com/drover-dev/drover/internal/layout"
	"github.com/drover-dev/drover/secrets"
	"github.com/drover-dev/drover/spec"
)

// RevisionError is an error of the revision's content: it halts the
// revision rather than being retried.
type RevisionError struct{ Err error }

func (e *RevisionError) Error() string { return e.Err.Error() }
func (e *RevisionError) Unwrap() error { return e.Err }

// RevisionFault says the revision, not the node, is at fault.
func (e *RevisionError) RevisionFault() bool { return true }

// Store is the release store Releases decorates: reconcile's Releases
// methods, and where a release's directory is (the artifacts store).
type Store interface {
	Prepare(ctx context.Context, rev string, specBytes []byte, sp *spec.Spec, fsys fs.FS) error
	Current() (string, error)
	Switch(rev string) error
	SpecOf(rev string) ([]byte, error)
	Prune(ctx context.Context, keep int) error
	ReleaseDir(rev string) string
}

// Releases is the release store with workers' secretEnv files: each is
// decrypted (and checked) before anything is materialized, and written into
// the release once it is complete. It satisfies reconcile.Releases.
type Releases struct {
	Store
	// IdentityFile is node.yaml's secrets.identityFile ("" when absent).
	IdentityFile string
}

func (s Releases) Prepare(ctx context.Context, rev string, specBytes []byte, sp *spec.Spec, fsys fs.FS) error {
	envs, err := Decrypt(s.IdentityFile, sp, fsys)
	if err != nil {
		return err
	}
	if err := s.Store.Prepare(ctx, rev, specBytes, sp, fsys); err != nil {
		return err
	}
	if len(envs) == 0 {
		return nil
	}
	dir := s.Store.ReleaseDir(rev) // complete: Prepare returned
	cur, err := s.Store.Current()
	if err != nil {
		return err
	}
	for _, w := range sp.Workers {
		vs, ok := envs[w.Name]
		if !ok {
			continue
		}
		uid, gid, err := workerOwner(w.User)
		if err != nil {
			return fmt.Errorf("worker %s: %w", w.Name, err)
		}
		prev := ""
		if cur != "" && cur != rev {
			prev = layout.SecretsEnvFile(s.Store.ReleaseDir(cur), w.Name)
		}
		if err := secrets.PlaceEnvFile(layout.SecretsEnvFile(dir, w.Name), prev, vs, uid, gid); err != nil {
			return fmt.Errorf("worker %s: %w", w.Name, err)
		}
	}
	return nil
}

// Decrypt decrypts every worker's secretEnv of sp with this node's
// identity. A file that is missing, does not decrypt or collides with env
// is the revision's fault (*RevisionError); an identity file that cannot be
// used is this node's, and is retried.
func Decrypt(identityFile string, sp *spec.Spec, fsys fs.FS) (map[string]secrets.Vars, error) {
	var id *secrets.Identity
	out := map[string]secrets.Vars{}
	for i, w := range sp.Workers {
		if w.SecretEnv == "" {
			continue
		}
		field := fmt.Sprintf("%s: workers[%d].secretEnv", spec.FileName, i)
		if identityFile == "" {
			return nil, &RevisionError{fmt.Errorf("%s: %s: this node has no secrets.identityFile in node.yaml to decrypt it", field, w.SecretEnv)}
		}
		if id == nil {
			var err error
			if id, err = secrets.LoadIdentity(identityFile); err != nil {
				return nil, err
			}
		}
		ct, err := fs.ReadFile(fsys, path.Clean(w.SecretEnv))
		if err != nil {
			return nil, &RevisionError{fmt.Errorf("%s: %w", field, err)}
		}
		vs, err := id.Decrypt(w.SecretEnv, ct)
		if err == nil {
			err = vs.CheckAgainst(w.SecretEnv, w.Env)
		}
		if err != nil {
			return nil, &RevisionError{fmt.Errorf("%s: %w", field, err)}
		}
		out[w.Name] = vs
	}
	return out, nil
}

// CheckFiles is validate's check of workers' secretEnv files: each must
// exist in dir and be age-encrypted, so CI refuses a secret committed in
// clear. file names the spec in the errors.
func CheckFiles(file, dir string, sp *spec.Spec) []error {
	var errs []error
	root, err := os.OpenRoot(dir)
	if err != nil {
		return []error{err}
	}
	defer root.Close()
	for i, w := range sp.Workers {
		if w.SecretEnv == "" {
			continue
		}
		// Through the root: validate reads nothing outside dir.
		data, err := root.ReadFile(filepath.FromSlash(w.SecretEnv))
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s: workers[%d].secretEnv: %w", file, i, err))
		case !secrets.LooksEncrypted(data):
			errs = append(errs, fmt.Errorf("%s: workers[%d].secretEnv: %s is not age-encrypted: encrypt it with drover secrets encrypt, and treat what was committed as leaked", file, i, w.SecretEnv))
		}
	}
	return errs
}

// workerOwner is the uid and gid the secret file of a worker running as
// name belongs to; -1 (the agent's, root) for a worker without a user:
// systemd's dynamic user does not exist before the worker starts, and
// systemd reads EnvironmentFile= as root.
func workerOwner(name string) (int, int, error) {
	if name == "" {
		return -1, -1, nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		return 0, 0, err
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return 0, 0, err
	}
	gid, err := strconv.Atoi(u.Gid)
	return uid, gid, err
}

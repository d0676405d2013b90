// Package secrets keeps workers' secrets in the config repo encrypted with
// age (filippo.io/age) and gives them to the workers of one node.
//
// The contract:
//
//   - A spec's worker names an age file in the repo (secretEnv). Its clear
//     text is an environment file: KEY=value lines, blank lines and #
//     comments; the value is everything after the first '=', byte for byte
//     (no quotes, no escapes), on one line.
//   - Each node decrypts it with its own identity (node.yaml
//     secrets.identityFile), which must not be readable by group or others.
//   - A file that does not decrypt, is not such a file, or sets a key the
//     spec's env (or PORT) already sets is the revision's fault; the error
//     names the file and line, never a value.
//   - The clear text reaches the disk once per change: PlaceEnvFile puts it
//     in the release, mode 0600, owned by the worker's user, in a form
//     systemd's EnvironmentFile= and ReadEnvFile read back exactly, and
//     links an unchanged one from the previous release (same inode, so no
//     worker restarts for it).
//   - Nothing here logs; Vars.Keys and Diff give names, never values.
package secrets

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"filippo.io/age"
	"filippo.io/age/armor"

	"github.com/drover-dev/drover/internal/atomicfile"
)

// Identity is this node's age identity.
type Identity struct {
	file string
	ids  []age.Identity
}

// LoadIdentity reads an age identity file (age-keygen's format, or
// `drover secrets keygen`'s). A file readable by group or others is
// refused: it decrypts every secret of the cluster.
func LoadIdentity(file string) (*Identity, error) {
	fi, err := os.Stat(file)
	if err != nil {
		return nil, fmt.Errorf("secrets identity: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("secrets identity %s: mode %04o lets others read it: chmod 600 %s", file, fi.Mode().Perm(), file)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("secrets identity: %w", err)
	}
	ids, err := age.ParseIdentities(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("secrets identity %s: %w", file, err)
	}
	return &Identity{file: file, ids: ids}, nil
}

// Recipients are the public keys (age1…) of the identity, one per line:
// what a developer encrypts to so that this node can decrypt.
func (id *Identity) Recipients() ([]string, error) {
	var out []string
	for _, i := range id.ids {
		x, ok := i.(*age.X25519Identity)
		if !ok {
			return nil, fmt.Errorf("%s: an identity of type %T has no printable recipient", id.file, i)
		}
		out = append(out, x.Recipient().String())
	}
	return out, nil
}

// Var is one KEY=value of a secret environment file.
type Var struct {
	Key, Value string
}

// Vars is a parsed secret environment file.
type Vars []Var

// Keys are the names, sorted: what may be shown.
func (vs Vars) Keys() []string {
	ks := make([]string, len(vs))
	for i, v := range vs {
		ks[i] = v.Key
	}
	slices.Sort(ks)
	return ks
}

// Decrypt decrypts the age file name (for errors), armored or binary, and
// parses its clear text.
func (id *Identity) Decrypt(name string, ciphertext []byte) (Vars, error) {
	var r io.Reader = bytes.NewReader(ciphertext)
	if bytes.HasPrefix(bytes.TrimSpace(ciphertext), []byte(armor.Header)) {
		r = armor.NewReader(bytes.NewReader(bytes.TrimSpace(ciphertext)))
	}
	d, err := age.Decrypt(r, id.ids...)
	if err != nil {
		return nil, fmt.Errorf("%s: does not decrypt with this node's identity (%s): %w", name, id.file, err)
	}
	clear, err := io.ReadAll(d)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	defer Wipe(clear)
	return ParseEnv(name, clear)
}

// ParseEnv reads KEY=value lines. Errors name file:line, never the value.
func ParseEnv(name string, data []byte) (Vars, error) {
	var vs Vars
	var errs []error
	seen := map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSuffix(sc.Text(), "\r")
		if t := strings.TrimSpace(line); t == "" || t[0] == '#' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("%s:%d: not KEY=value", name, n))
		case !keyOK(k):
			errs = append(errs, fmt.Errorf("%s:%d: %q is not an environment variable name", name, n, k))
		case k == "PORT":
			errs = append(errs, fmt.Errorf("%s:%d: PORT is drover's to set", name, n))
		case seen[k] > 0:
			errs = append(errs, fmt.Errorf("%s:%d: %s set again (first on line %d)", name, n, k, seen[k]))
		case strings.ContainsRune(v, 0):
			errs = append(errs, fmt.Errorf("%s:%d: value of %s holds a NUL byte", name, n, k))
		default:
			seen[k] = n
			vs = append(vs, Var{Key: k, Value: v})
		}
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", name, err))
	}
	return vs, errors.Join(errs...)
}

func keyOK(k string) bool {
	if k == "" || (k[0] >= '0' && k[0] <= '9') {
		return false
	}
	for _, c := range k {
		if !(c == '_' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// CheckAgainst refuses keys that env (a worker's clear env) already sets:
// which value wins would be up to the supervisor.
func (vs Vars) CheckAgainst(name string, env map[string]string) error {
	var errs []error
	for _, v := range vs {
		if _, ok := env[v.Key]; ok {
			errs = append(errs, fmt.Errorf("%s: %s is also set in env: set it in one place", name, v.Key))
		}
	}
	return errors.Join(errs...)
}

// Diff names the keys added, removed or changed from old to new as
// KEY=<added>, KEY=<removed>, KEY=<changed>, sorted; values never appear.
func Diff(old, new Vars) []string {
	o := map[string]string{}
	for _, v := range old {
		o[v.Key] = v.Value
	}
	var out []string
	n := map[string]bool{}
	for _, v := range new {
		n[v.Key] = true
		switch ov, ok := o[v.Key]; {
		case !ok:
			out = append(out, v.Key+"=<added>")
		case ov != v.Value:
			out = append(out, v.Key+"=<changed>")
		}
	}
	for _, v := range old {
		if !n[v.Key] {
			out = append(out, v.Key+"=<removed>")
		}
	}
	slices.Sort(out)
	return out
}

// Plain renders vs in the clear-text format ParseEnv reads (for editing).
func (vs Vars) Plain() []byte {
	var b bytes.Buffer
	for _, v := range vs {
		b.WriteString(v.Key + "=" + v.Value + "\n")
	}
	return b.Bytes()
}

// Encode renders vs as an environment file that systemd's
// EnvironmentFile= reads back exactly: each value single-quoted (literal
// to systemd), or double-quoted with \ " $ ` escaped when it holds a
// single quote.
func (vs Vars) Encode() []byte {
	var b bytes.Buffer
	b.WriteString("# Written by drover from an age-encrypted secretEnv file. Do not edit.\n")
	for _, v := range vs {
		b.WriteString(v.Key + "=")
		if !strings.Contains(v.Value, "'") {
			b.WriteString("'" + v.Value + "'\n")
			continue
		}
		b.WriteByte('"')
		for _, c := range []byte(v.Value) {
			if c == '\\' || c == '"' || c == '$' || c == '`' {
				b.WriteByte('\\')
			}
			b.WriteByte(c)
		}
		b.WriteString("\"\n")
	}
	return b.Bytes()
}

// ReadEnvFile reads a file written by WriteEnvFile back into KEY=value
// strings, as systemd does; the exec supervisor starts workers with it.
func ReadEnvFile(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	defer Wipe(data)
	var env []string
	for n, line := range strings.Split(string(data), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || len(v) < 2 {
			return nil, fmt.Errorf("%s:%d: not KEY='value'", path, n+1)
		}
		switch q := v[0]; {
		case q == '\'' && v[len(v)-1] == q:
			v = v[1 : len(v)-1]
		case q == '"' && v[len(v)-1] == q:
			var b strings.Builder
			for i := 1; i < len(v)-1; i++ {
				if v[i] == '\\' && i+1 < len(v)-1 {
					i++
				}
				b.WriteByte(v[i])
			}
			v = b.String()
		default:
			return nil, fmt.Errorf("%s:%d: not KEY='value'", path, n+1)
		}
		env = append(env, k+"="+v)
	}
	return env, nil
}

// WriteEnvFile writes vs to path, mode 0600, owned by uid:gid (-1 keeps
// the writer's), atomically. Its directory is made 0711: the worker's
// user reaches its own file, no one lists the others.
func WriteEnvFile(path string, vs Vars, uid, gid int) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return fmt.Errorf("write secret env: %w", err)
	}
	if err := os.Chmod(dir, 0o711); err != nil {
		return fmt.Errorf("write secret env: %w", err)
	}
	data := vs.Encode()
	defer Wipe(data)
	tmp, err := atomicfile.WriteTemp(path, data, 0o600)
	if err != nil {
		return fmt.Errorf("write secret env: %w", err)
	}
	if uid >= 0 || gid >= 0 {
		if err := os.Chown(tmp, uid, gid); err != nil {
			os.Remove(tmp)
			return fmt.Errorf("write secret env: %w", err)
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write secret env: %w", err)
	}
	return atomicfile.SyncDir(dir)
}

// PlaceEnvFile puts vs at path like WriteEnvFile, but keeps the file's
// identity when the secret did not change: a path already holding exactly
// vs (same owner, 0600) is left alone, and when prev (the same worker's
// file in the previous release) does, path becomes a hard link of it. The
// systemd supervisor tells a changed secret by the file's inode, so an
// unchanged one restarts nothing.
func PlaceEnvFile(path, prev string, vs Vars, uid, gid int) error {
	if holds(path, vs, uid, gid) {
		return nil
	}
	if prev == "" || !holds(prev, vs, uid, gid) {
		return WriteEnvFile(path, vs, uid, gid)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return fmt.Errorf("write secret env: %w", err)
	}
	if err := os.Chmod(dir, 0o711); err != nil {
		return fmt.Errorf("write secret env: %w", err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("write secret env: %w", err)
	}
	if err := os.Link(prev, path); err != nil {
		return WriteEnvFile(path, vs, uid, gid)
	}
	return atomicfile.SyncDir(dir)
}

// holds reports whether the file at path is vs, mode 0600, owned by
// uid:gid (-1: the writer's).
func holds(path string, vs Vars, uid, gid int) bool {
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if uid < 0 {
		uid = os.Geteuid()
	}
	if gid < 0 {
		gid = os.Getegid()
	}
	if !ok || int(st.Uid) != uid || int(st.Gid) != gid {
		return false
	}
	env, err := ReadEnvFile(path)
	if err != nil || len(env) != len(vs) {
		return false
	}
	same := true
	for i, v := range vs {
		if env[i] != v.Key+"="+v.Value {
			same = false
		}
	}
	return same
}

// Wipe overwrites clear text before the buffer is dropped, so that it
// does not linger in a heap that a core dump would show.
func Wipe(b []byte) {
	for i := range b {
		b[i] = 0
	}
}

// LooksEncrypted reports whether data is an age file (binary or armored),
// so that validate catches a secret committed in clear.
func LooksEncrypted(data []byte) bool {
	return bytes.HasPrefix(data, []byte("age-encryption.org/v1\n")) ||
		bytes.HasPrefix(bytes.TrimSpace(data), []byte(armor.Header))
}

// ParseRecipients reads age recipients (age1…), one per line, # comments.
func ParseRecipients(name string, data []byte) ([]age.Recipient, error) {
	rs, err := age.ParseRecipients(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return rs, nil
}

// Encrypt encrypts clear (after checking it parses as an environment file)
// to every recipient, armored so that diffs of the repo stay text.
func Encrypt(name string, clear []byte, rs []age.Recipient) ([]byte, error) {
	if _, err := ParseEnv(name, clear); err != nil {
		return nil, err
	}
	var out bytes.Buffer
	a := armor.NewWriter(&out)
	w, err := age.Encrypt(a, rs...)
	if err != nil {
		return nil, fmt.Errorf("encrypt %s: %w", name, err)
	}
	if _, err := w.Write(clear); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	if err := a.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

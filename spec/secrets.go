package spec

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// SecretFile is one of node.yaml's files of secrets.
type SecretFile struct {
	Field, Path string
}

// SecretFiles lists node.yaml's files that hold secrets (tokens, passwords,
// keys, the DSN), by field; files that are not set are left out.
// knownHostsFile is public and not listed.
func (n *Node) SecretFiles() []SecretFile {
	var out []SecretFile
	add := func(field, p string) {
		if p != "" {
			out = append(out, SecretFile{field, p})
		}
	}
	add("repo.sshKeyFile", n.Repo.SSHKeyFile)
	add("repo.tokenFile", n.Repo.TokenFile)
	if c := n.Cluster; c != nil {
		add("cluster.passwordFile", c.PasswordFile)
		add("cluster.sentinelPasswordFile", c.SentinelPasswordFile)
	}
	if w := n.Webhook; w != nil {
		add("webhook.secretFile", w.SecretFile)
	}
	add("lb.digitalocean.tokenFile", n.LB.DigitalOcean.TokenFile)
	if d := n.Database; d != nil {
		add("database.dsnFile", d.DSNFile)
	}
	if s := n.Secrets; s != nil {
		add("secrets.identityFile", s.IdentityFile)
	}
	return out
}

// CheckSecretFiles refuses every secret file of n (see SecretFiles) whose
// mode lets its group or others read it, naming the field and the path:
// a secret that any local user (or a worker) can read is not a secret, and
// drover would not know it had leaked. It runs when node.yaml is loaded, so
// the agent refuses to start and every command refuses to run until the
// file is chmod 600 (or 400). A file that does not exist is left to the
// part that reads it, which says so.
func CheckSecretFiles(file string, n *Node) error {
	var errs Errors
	for _, s := range n.SecretFiles() {
		fi, err := os.Stat(s.Path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, &FieldError{File: file, Field: s.Field, Msg: err.Error()})
			continue
		}
		if m := fi.Mode().Perm(); m&0o044 != 0 {
			errs = append(errs, &FieldError{File: file, Field: s.Field,
				Msg: fmt.Sprintf("%s is mode %04o: its group or others can read this secret; chmod 600 %s", s.Path, m, s.Path)})
		}
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

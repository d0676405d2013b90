package gitsource

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"path"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// This file verifies SSH signatures as git makes them with gpg.format=ssh
// (`ssh-keygen -Y sign -n git`), following OpenSSH's PROTOCOL.sshsig, and
// reads the allowed_signers file of ssh-keygen(1) that says which keys may
// sign. It is written here, on golang.org/x/crypto/ssh, so that the agent
// never shells out to ssh-keygen.

const (
	sshsigMagic   = "SSHSIG"
	sshsigVersion = 1
	sshsigBegin   = "-----BEGIN SSH SIGNATURE-----"
	sshsigEnd     = "-----END SSH SIGNATURE-----"
	// gitNamespace is the namespace git signs commits in; a signature made
	// for another purpose (a file, an e-mail) must not pass as a commit's.
	gitNamespace = "git"
)

// sshSignature is a parsed SSHSIG blob.
type sshSignature struct {
	key       ssh.PublicKey
	namespace string
	hashAlg   string
	sig       *ssh.Signature
}

// parseSSHSignature decodes an armored SSHSIG ("-----BEGIN SSH
// SIGNATURE-----" …).
func parseSSHSignature(armored string) (*sshSignature, error) {
	body := strings.TrimSpace(armored)
	body, ok := strings.CutPrefix(body, sshsigBegin)
	if !ok {
		return nil, errors.New("not an SSH signature")
	}
	body, ok = strings.CutSuffix(body, sshsigEnd)
	if !ok {
		return nil, errors.New("SSH signature without its end line")
	}
	raw, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(body), ""))
	if err != nil {
		return nil, fmt.Errorf("SSH signature: %w", err)
	}
	if !bytes.HasPrefix(raw, []byte(sshsigMagic)) {
		return nil, errors.New("SSH signature: no SSHSIG preamble")
	}
	var blob struct {
		Version   uint32
		PublicKey []byte
		Namespace string
		Reserved  []byte
		HashAlg   string
		Signature []byte
	}
	if err := ssh.Unmarshal(raw[len(sshsigMagic):], &blob); err != nil {
		return nil, fmt.Errorf("SSH signature: %w", err)
	}
	if blob.Version != sshsigVersion {
		return nil, fmt.Errorf("SSH signature: version %d is not supported", blob.Version)
	}
	key, err := ssh.ParsePublicKey(blob.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("SSH signature: public key: %w", err)
	}
	sig := new(ssh.Signature)
	if err := ssh.Unmarshal(blob.Signature, sig); err != nil {
		return nil, fmt.Errorf("SSH signature: signature: %w", err)
	}
	return &sshSignature{key: key, namespace: blob.Namespace, hashAlg: blob.HashAlg, sig: sig}, nil
}

// verify checks s over message in namespace ns.
func (s *sshSignature) verify(message []byte, ns string) error {
	if s.namespace != ns {
		return fmt.Errorf("signed for namespace %q, not %q", s.namespace, ns)
	}
	var h hash.Hash
	switch s.hashAlg {
	case "sha256":
		h = sha256.New()
	case "sha512":
		h = sha512.New()
	default:
		return fmt.Errorf("hash algorithm %q is not supported", s.hashAlg)
	}
	// ssh-keygen refuses SHA-1 RSA signatures in SSHSIG; so does this.
	if s.sig.Format == ssh.KeyAlgoRSA {
		return errors.New("RSA signature with SHA-1 (ssh-rsa) is not accepted")
	}
	h.Write(message)
	signed := append([]byte(sshsigMagic), ssh.Marshal(struct {
		Namespace string
		Reserved  []byte
		HashAlg   string
		Hash      []byte
	}{ns, nil, s.hashAlg, h.Sum(nil)})...)
	if err := s.key.Verify(signed, s.sig); err != nil {
		return fmt.Errorf("bad signature: %w", err)
	}
	return nil
}

// allowedSigner is one line of an allowed_signers file.
type allowedSigner struct {
	line        int
	principals  string // as written, e.g. "alice@example.com,alice"
	key         ssh.PublicKey
	namespaces  []string // patterns; empty allows every namespace
	validAfter  time.Time
	validBefore time.Time
}

// parseAllowedSigners reads the allowed_signers format of ssh-keygen(1):
//
//	principals [options] keytype base64-key [comment]
//
// with the options namespaces="…", valid-after="…" and valid-before="…".
// cert-authority lines (trusting a CA's certificates) are refused rather
// than ignored, so that a file meant to trust someone does not silently
// trust no one. Errors name file:line.
func parseAllowedSigners(file string, data []byte) ([]allowedSigner, error) {
	var out []allowedSigner
	var errs []error
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		s, err := parseAllowedSigner(line)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s:%d: %w", file, n, err))
			continue
		}
		s.line = n
		out = append(out, s)
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", file, err))
	}
	if len(out) == 0 && len(errs) == 0 {
		errs = append(errs, fmt.Errorf("%s: no signer listed", file))
	}
	return out, errors.Join(errs...)
}

func parseAllowedSigner(line string) (allowedSigner, error) {
	principals, rest := cutToken(line)
	if principals == "" || rest == "" {
		return allowedSigner{}, errors.New("want: principals [options] keytype key")
	}
	key, _, options, _, err := ssh.ParseAuthorizedKey([]byte(rest))
	if err != nil {
		return allowedSigner{}, fmt.Errorf("key: %w", err)
	}
	s := allowedSigner{principals: strings.Trim(principals, `"`), key: key}
	for _, opt := range options {
		name, value, _ := strings.Cut(opt, "=")
		value = strings.Trim(value, `"`)
		switch strings.ToLower(name) {
		case "namespaces":
			s.namespaces = strings.Split(value, ",")
		case "valid-after":
			if s.validAfter, err = parseSSHTime(value); err != nil {
				return s, fmt.Errorf("valid-after: %w", err)
			}
		case "valid-before":
			if s.validBefore, err = parseSSHTime(value); err != nil {
				return s, fmt.Errorf("valid-before: %w", err)
			}
		case "cert-authority":
			return s, errors.New("cert-authority is not supported: list the signers' keys")
		default:
			return s, fmt.Errorf("option %q is not supported", name)
		}
	}
	return s, nil
}

// cutToken splits off the first space-separated token, which may be
// double-quoted.
func cutToken(s string) (tok, rest string) {
	inQuote := false
	for i, r := range s {
		switch {
		case r == '"':
			inQuote = !inQuote
		case (r == ' ' || r == '\t') && !inQuote:
			return s[:i], strings.TrimSpace(s[i:])
		}
	}
	return s, ""
}

// parseSSHTime reads ssh-keygen's YYYYMMDD[HHMM[SS]][Z] (local time unless
// Z).
func parseSSHTime(v string) (time.Time, error) {
	loc := time.Local
	if s, ok := strings.CutSuffix(v, "Z"); ok {
		v, loc = s, time.UTC
	}
	for _, layout := range []string{"20060102", "200601021504", "20060102150405"} {
		if len(v) == len(layout) {
			return time.ParseInLocation(layout, v, loc)
		}
	}
	return time.Time{}, fmt.Errorf("%q is not YYYYMMDD[HHMM[SS]][Z]", v)
}

// allows reports whether s may sign in namespace ns at time now.
func (s *allowedSigner) allows(ns string, now time.Time) error {
	if len(s.namespaces) > 0 {
		ok := false
		for _, p := range s.namespaces {
			if m, _ := path.Match(strings.TrimSpace(p), ns); m {
				ok = true
			}
		}
		if !ok {
			return fmt.Errorf("key of %s is not allowed to sign in namespace %q", s.principals, ns)
		}
	}
	if !s.validAfter.IsZero() && now.Before(s.validAfter) {
		return fmt.Errorf("key of %s is valid only after %s", s.principals, s.validAfter.Format(time.RFC3339))
	}
	if !s.validBefore.IsZero() && !now.Before(s.validBefore) {
		return fmt.Errorf("key of %s expired at %s", s.principals, s.validBefore.Format(time.RFC3339))
	}
	return nil
}

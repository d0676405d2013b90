package gitsource

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	gogit "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"golang.org/x/crypto/ssh"

	"github.com/drover-dev/drover/internal/atomicfile"
	"github.com/drover-dev/drover/internal/layout"
)

// Signature verification. With node.yaml's repo.verify the git server is
// not trusted: a revision may go live only when its commit carries a good
// signature, made by a key the node lists, over the commit object without
// its gpgsig header (what `git commit -S` signs, OpenPGP or SSH). With
// RequireAll, so must every commit between the live revision and it.

// Trust is the keys allowed to sign revisions: OpenPGP public keys and SSH
// allowed signers. Build it with LoadTrust.
type Trust struct {
	keyring openpgp.EntityList
	ssh     []allowedSigner
	// now is the clock keys' expiry and validity are checked against.
	now func() time.Time
}

// LoadTrust reads an armored OpenPGP keyring file and/or an SSH
// allowed_signers file; at least one must be given. Errors name the file
// (and line, for allowed_signers).
func LoadTrust(openpgpKeyring, sshAllowedSigners string) (*Trust, error) {
	if openpgpKeyring == "" && sshAllowedSigners == "" {
		return nil, errors.New("verify: no openpgpKeyring and no sshAllowedSigners: no key could sign")
	}
	t := &Trust{now: time.Now}
	if openpgpKeyring != "" {
		data, err := os.ReadFile(openpgpKeyring)
		if err != nil {
			return nil, fmt.Errorf("openpgp keyring: %w", err)
		}
		if t.keyring, err = readKeyring(data); err != nil {
			return nil, fmt.Errorf("%s: %w", openpgpKeyring, err)
		}
	}
	if sshAllowedSigners != "" {
		data, err := os.ReadFile(sshAllowedSigners)
		if err != nil {
			return nil, fmt.Errorf("ssh allowed signers: %w", err)
		}
		if t.ssh, err = parseAllowedSigners(sshAllowedSigners, data); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// readKeyring reads every armored public key block in data: a keyring
// file is often several `gpg --export --armor` outputs put together, and
// go-crypto reads only the first block of a stream.
func readKeyring(data []byte) (openpgp.EntityList, error) {
	const begin = "-----BEGIN PGP PUBLIC KEY BLOCK-----"
	blocks := strings.Split(string(data), begin)
	var ring openpgp.EntityList
	for i, b := range blocks[1:] {
		el, err := openpgp.ReadArmoredKeyRing(strings.NewReader(begin + b))
		if err != nil {
			return nil, fmt.Errorf("key block %d: %w", i+1, err)
		}
		ring = append(ring, el...)
	}
	if len(ring) == 0 {
		return nil, errors.New("no armored OpenPGP public key (-----BEGIN PGP PUBLIC KEY BLOCK-----)")
	}
	return ring, nil
}

// SignatureError is a commit refused by verification: unsigned, a bad
// signature, an unknown, revoked or expired key. It is the revision's fault.
type SignatureError struct {
	Commit string // full commit id
	Signer string // who signed it, when the key is known or named
	Reason string
}

// RevisionFault says the revision, not the node, is at fault: a commit
// refused for its signature is refused on every node and every try, so
// the rollout halts it (reconcile.IsBadRevision).
func (e *SignatureError) RevisionFault() bool { return true }

func (e *SignatureError) Error() string {
	c := e.Commit
	if len(c) > 12 {
		c = c[:12]
	}
	if e.Signer != "" {
		return fmt.Sprintf("commit %s: signature by %s: %s", c, e.Signer, e.Reason)
	}
	return fmt.Sprintf("commit %s: %s", c, e.Reason)
}

// VerifyCommit checks c's signature and returns who signed it.
func (t *Trust) VerifyCommit(c *object.Commit) (string, error) {
	sc, err := signedPayload(c)
	if err != nil {
		return "", err
	}
	return t.check(sc)
}

// signedCommit is what a commit's signature covers, read out of go-git's
// objects (which are not safe for concurrent use) so that the signatures
// of a range can be checked in parallel.
type signedCommit struct {
	hash string
	sig  string
	msg  []byte // the commit object without its gpgsig header
}

func signedPayload(c *object.Commit) (signedCommit, error) {
	sc := signedCommit{hash: c.Hash.String(), sig: strings.TrimSpace(c.PGPSignature)}
	if sc.sig == "" {
		return sc, nil
	}
	var payload plumbing.MemoryObject
	if err := c.EncodeWithoutSignature(&payload); err != nil {
		return sc, fmt.Errorf("encode commit %s: %w", c.Hash, err)
	}
	rd, err := payload.Reader()
	if err != nil {
		return sc, err
	}
	defer rd.Close()
	sc.msg, err = io.ReadAll(rd)
	return sc, err
}

// check verifies one commit's signature; it only reads t.
func (t *Trust) check(c signedCommit) (string, error) {
	refuse := func(signer, format string, args ...any) (string, error) {
		return "", &SignatureError{Commit: c.hash, Signer: signer, Reason: fmt.Sprintf(format, args...)}
	}
	sig := c.sig
	if sig == "" {
		return refuse("", "unsigned")
	}
	if n := strings.Count(sig, "-----BEGIN "); n > 1 {
		return refuse("", "%d signatures; exactly one is accepted", n)
	}
	switch {
	case strings.HasPrefix(sig, "-----BEGIN PGP SIGNATURE-----"):
		return t.verifyOpenPGP(c.msg, sig, refuse)
	case strings.HasPrefix(sig, sshsigBegin):
		return t.verifySSH(c.msg, sig, refuse)
	default:
		return refuse("", "signature of an unsupported kind (want OpenPGP or SSH)")
	}
}

func (t *Trust) verifyOpenPGP(msg []byte, sig string, refuse func(string, string, ...any) (string, error)) (string, error) {
	if len(t.keyring) == 0 {
		return refuse("", "signed with OpenPGP, but no openpgpKeyring is configured")
	}
	cfg := &packet.Config{Time: t.now}
	signer, err := openpgp.CheckArmoredDetachedSignature(t.keyring, bytes.NewReader(msg), strings.NewReader(sig), cfg)
	name := ""
	if signer != nil {
		name = entityName(signer)
	}
	switch {
	case err == nil:
		return name, nil
	case errors.Is(err, pgperrors.ErrUnknownIssuer):
		id, issuer := issuerOf(sig)
		// The keyring only offers keys valid for signing now: tell a
		// listed key that expired or was revoked from an unknown one.
		if keys := t.keyring.KeysById(id); len(keys) > 0 {
			return refuse(entityName(keys[0].Entity), "%s", unusableKey(keys[0].Entity, t.now()))
		}
		return refuse(issuer, "key not in the openpgp keyring")
	case errors.Is(err, pgperrors.ErrKeyExpired):
		return refuse(name, "key expired")
	case errors.Is(err, pgperrors.ErrSignatureExpired):
		return refuse(name, "signature expired")
	case errors.Is(err, pgperrors.ErrKeyRevoked):
		return refuse(name, "key revoked")
	default:
		// A signature that does not match the commit's content (the tree
		// or a parent swapped under it) lands here.
		if name == "" {
			_, name = issuerOf(sig)
		}
		return refuse(name, "bad signature: %v", err)
	}
}

// entityName is "Name <email> (fingerprint)" of an OpenPGP key.
func entityName(e *openpgp.Entity) string {
	fp := fmt.Sprintf("%X", e.PrimaryKey.Fingerprint)
	if id := e.PrimaryIdentity(); id != nil {
		return fmt.Sprintf("%s (OpenPGP %s)", id.Name, fp)
	}
	return "OpenPGP key " + fp
}

// issuerOf returns the key id a signature claims and names it, for errors
// about keys the node does not know.
func issuerOf(armored string) (uint64, string) {
	block, err := armor.Decode(strings.NewReader(armored))
	if err != nil {
		return 0, ""
	}
	p, err := packet.NewReader(block.Body).Next()
	if err != nil {
		return 0, ""
	}
	s, ok := p.(*packet.Signature)
	if !ok || s.IssuerKeyId == nil {
		return 0, ""
	}
	if s.IssuerFingerprint != nil {
		return *s.IssuerKeyId, fmt.Sprintf("OpenPGP key %X", s.IssuerFingerprint)
	}
	return *s.IssuerKeyId, fmt.Sprintf("OpenPGP key %016X", *s.IssuerKeyId)
}

// unusableKey says why a listed key cannot sign at now.
func unusableKey(e *openpgp.Entity, now time.Time) string {
	if e.Revoked(now) {
		return "key revoked"
	}
	for _, id := range e.Identities {
		if id.SelfSignature != nil && e.PrimaryKey.KeyExpired(id.SelfSignature, now) {
			return "key expired"
		}
	}
	for _, sub := range e.Subkeys {
		if sub.Sig != nil && sub.PublicKey.KeyExpired(sub.Sig, now) {
			return "signing subkey expired"
		}
	}
	return "key is not valid for signing"
}

func (t *Trust) verifySSH(msg []byte, armored string, refuse func(string, string, ...any) (string, error)) (string, error) {
	if len(t.ssh) == 0 {
		return refuse("", "signed with SSH, but no sshAllowedSigners is configured")
	}
	s, err := parseSSHSignature(armored)
	if err != nil {
		return refuse("", "%v", err)
	}
	fp := ssh.FingerprintSHA256(s.key)
	var signer *allowedSigner
	for i := range t.ssh {
		if bytes.Equal(t.ssh[i].key.Marshal(), s.key.Marshal()) {
			signer = &t.ssh[i]
			break
		}
	}
	if signer == nil {
		return refuse("SSH key "+fp, "key not in the allowed signers")
	}
	name := fmt.Sprintf("%s (SSH %s)", signer.principals, fp)
	if err := s.verify(msg, gitNamespace); err != nil {
		return refuse(name, "%v", err)
	}
	if err := signer.allows(gitNamespace, t.now()); err != nil {
		return refuse(name, "%v", err)
	}
	return name, nil
}

// VerifyConfig is what Verify checks.
type VerifyConfig struct {
	Trust *Trust
	// All requires every commit since the live revision to be signed, not
	// only the revision itself.
	All bool
}

// maxVerifyDepth bounds how far back require: all looks for the live
// revision, so a rewritten history cannot make a node fetch and walk the
// whole repository.
const maxVerifyDepth = 10000

// Verify checks that rev, which must have been fetched, may go live, and
// returns its signer. With cfg.All it also checks every commit reachable
// from rev that is not reachable from live ("" for none) or from a commit
// this store verified before (so a rollback to an older verified revision
// checks only that revision's own signature); it deepens the shallow store
// as far as it must to find them. On a first deploy (no live revision,
// nothing verified yet) only rev itself is checked. A refused commit is a
// *SignatureError.
func (r *Repo) Verify(ctx context.Context, cfg VerifyConfig, rev, live string) (string, error) {
	h, err := parseRev(rev)
	if err != nil {
		return "", err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.usable(ctx); err != nil {
		return "", fmt.Errorf("verify %s: %w", rev, err)
	}
	tip, err := r.commit(h)
	if err != nil {
		return "", fmt.Errorf("verify %s: %w", rev, err)
	}
	signer, err := cfg.Trust.VerifyCommit(tip)
	if err != nil || !cfg.All {
		return signer, err
	}
	seen, err := r.loadVerified()
	if err != nil {
		return "", err
	}
	if live == "" && len(seen) == 0 {
		// A first deploy has no range: the history before the first
		// verified revision is vouched for by that revision's signer.
		return signer, r.saveVerified(seen, []plumbing.Hash{h})
	}
	var liveCommit *object.Commit
	if live != "" {
		seen[plumbing.NewHash(live)] = true
		if liveCommit, err = r.commit(plumbing.NewHash(live)); err != nil && !errors.Is(err, ErrNotFetched) {
			return "", fmt.Errorf("verify %s: live %s: %w", rev, live, err)
		}
	}
	for depth := 16; ; depth *= 8 {
		checked, missing, refused, err := r.verifyRange(ctx, cfg.Trust, tip, seen)
		liveComplete := false
		if err == nil && (missing || len(refused) > 0) && liveCommit != nil {
			// Ancestors of live are live history, not the range: a branch
			// forked before live and merged since reaches them. Walking
			// live's history costs, so only when the plain walk fell short.
			var stop map[plumbing.Hash]bool
			stop, liveComplete = r.ancestors(liveCommit, seen)
			checked, missing, refused, err = r.verifyRange(ctx, cfg.Trust, tip, stop)
		}
		if err != nil {
			return signer, err
		}
		atCap := depth/8 >= maxVerifyDepth
		if len(refused) > 0 {
			// A refused commit is refused at once unless it might be an
			// ancestor of live that the shallow store cannot show yet:
			// dated no later than live, with live's history incomplete.
			// Acceptance needs proven ancestry; dates only hasten a refusal.
			for _, c := range refused {
				if liveCommit == nil || liveComplete || atCap || c.when.After(liveCommit.Committer.When) {
					return signer, c.err
				}
			}
		} else if !missing {
			return signer, r.saveVerified(seen, append(checked, h))
		}
		if atCap {
			return "", &SignatureError{Commit: rev, Reason: fmt.Sprintf(
				"require all: no verified revision (live %s) within %d commits of it", shortHash(live), maxVerifyDepth)}
		}
		err = r.fetchDepth(ctx, r.st, h, true, min(depth, maxVerifyDepth))
		if errors.Is(err, transport.ErrEmptyUploadPackRequest) && len(refused) > 0 {
			// The store holds the whole history already: nothing can
			// show the refused commit to be live history.
			return signer, refused[0].err
		}
		if err != nil {
			return "", fmt.Errorf("verify %s: fetch history: %w", rev, err)
		}
	}
}

// ancestors returns seen plus every ancestor of live present in the
// store, and whether that history is complete (it reached root commits,
// or commits in seen, without meeting the shallow boundary).
func (r *Repo) ancestors(live *object.Commit, seen map[plumbing.Hash]bool) (map[plumbing.Hash]bool, bool) {
	stop := make(map[plumbing.Hash]bool, len(seen))
	for h := range seen {
		stop[h] = true
	}
	if live == nil {
		return stop, false
	}
	complete := true
	queue := append([]plumbing.Hash(nil), live.ParentHashes...)
	for len(queue) > 0 {
		h := queue[0]
		queue = queue[1:]
		if stop[h] {
			continue
		}
		c, err := r.commit(h)
		if err != nil {
			complete = false
			continue
		}
		stop[h] = true
		queue = append(queue, c.ParentHashes...)
	}
	return stop, complete
}

// refusal is a commit of a range whose signature was refused.
type refusal struct {
	when time.Time // its committer date
	err  error
}

// verifyRange walks from tip's parents back to commits in stop, checking
// each commit's signature. missing reports that the walk reached the
// store's shallow boundary; refused lists the refused commits, nearest
// the tip first. The walk reads the store (one goroutine, under r.mu);
// the signatures, the costly part, are checked on every CPU.
func (r *Repo) verifyRange(ctx context.Context, t *Trust, tip *object.Commit, stop map[plumbing.Hash]bool) (checked []plumbing.Hash, missing bool, refused []refusal, err error) {
	visited := map[plumbing.Hash]bool{tip.Hash: true}
	queue := append([]plumbing.Hash(nil), tip.ParentHashes...)
	var todo []signedCommit
	var when []time.Time
	for len(queue) > 0 {
		if err := ctx.Err(); err != nil {
			return nil, false, nil, err
		}
		h := queue[0]
		queue = queue[1:]
		if visited[h] || stop[h] {
			continue
		}
		visited[h] = true
		c, err := r.commit(h)
		if errors.Is(err, ErrNotFetched) {
			missing = true
			continue
		}
		if err != nil {
			return nil, false, nil, fmt.Errorf("read commit %s: %w", h, err)
		}
		sc, err := signedPayload(c)
		if err != nil {
			return nil, false, nil, err
		}
		todo = append(todo, sc)
		when = append(when, c.Committer.When)
		checked = append(checked, h)
		queue = append(queue, c.ParentHashes...)
	}
	errs := make([]error, len(todo))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(todo)) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < len(todo); i = int(next.Add(1) - 1) {
				_, errs[i] = t.check(todo[i])
			}
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			refused = append(refused, refusal{when: when[i], err: err})
		}
	}
	return checked, missing, refused, nil
}

// The commits this store verified, one id a line, beside the store (a
// re-clone keeps it). It is bounded: the oldest lines go first.
const maxVerifiedKept = 100000

func (r *Repo) verifiedFile() string { return layout.VerifiedFile(r.cfg.Dir) }

func (r *Repo) loadVerified() (map[plumbing.Hash]bool, error) {
	seen := map[plumbing.Hash]bool{}
	f, err := os.Open(r.verifiedFile())
	if errors.Is(err, os.ErrNotExist) {
		return seen, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line := sc.Text(); plumbing.IsHash(line) {
			seen[plumbing.NewHash(line)] = true
		}
	}
	return seen, sc.Err()
}

// saveVerified appends the ids in add that seen lacks.
func (r *Repo) saveVerified(seen map[plumbing.Hash]bool, add []plumbing.Hash) error {
	old, err := os.ReadFile(r.verifiedFile())
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	lines := strings.Fields(string(old))
	before := len(lines)
	for _, h := range add {
		if !seen[h] {
			seen[h] = true
			lines = append(lines, h.String())
		}
	}
	if len(lines) == before {
		return nil // nothing new: spare the fsync
	}
	if len(lines) > maxVerifiedKept {
		lines = lines[len(lines)-maxVerifiedKept:]
	}
	return atomicfile.WriteFile(r.verifiedFile(), []byte(strings.Join(lines, "\n")+"\n"), 0o600)
}

func shortHash(h string) string {
	if h == "" {
		return "none"
	}
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

// VerifyHead checks the signature of HEAD in the git work tree or
// repository holding dir (for `drover validate --verify`, so CI refuses
// what the nodes would). It returns HEAD's commit id and signer.
func VerifyHead(dir string, t *Trust) (rev, signer string, err error) {
	repo, err := gogit.PlainOpenWithOptions(dir, &gogit.PlainOpenOptions{DetectDotGit: true})
	if err != nil {
		return "", "", fmt.Errorf("open git repository of %s: %w", dir, err)
	}
	head, err := repo.Head()
	if err != nil {
		return "", "", fmt.Errorf("HEAD of %s: %w", dir, err)
	}
	c, err := repo.CommitObject(head.Hash())
	if err != nil {
		return "", "", fmt.Errorf("HEAD of %s: %w", dir, err)
	}
	signer, err = t.VerifyCommit(c)
	return c.Hash.String(), signer, err
}

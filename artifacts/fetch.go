package artifacts

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/drover-dev/drover/internal/atomicfile"
	"github.com/drover-dev/drover/spec"
)

var sha256RE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// fetch returns the path of the verified tarball a pins, from the cache or
// downloaded into it: streamed to S/cache/<sha256>.part through SHA-256,
// then renamed into place only when the digest matches the pin.
func (s *Store) fetch(ctx context.Context, a *spec.Artifact) (string, error) {
	u, err := url.Parse(a.URL)
	if err != nil {
		return "", fmt.Errorf("artifact %q: %w", a.URL, err)
	}
	label := u.Redacted()
	if !sha256RE.MatchString(a.SHA256) {
		return "", fmt.Errorf("artifact %s: sha256 %q is not 64 lowercase hex digits", label, a.SHA256)
	}
	file := filepath.Join(s.dir, "cache", a.SHA256)
	switch got, err := hashPath(file); {
	case err == nil && got == a.SHA256:
		return file, nil
	case err == nil:
		s.log.Warn("cached artifact is corrupt; downloading it again", "file", file, "sha256", got)
	case !errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("artifact %s: %w", label, err)
	}
	body, err := s.open(ctx, u)
	if err != nil {
		return "", fmt.Errorf("download %s: %w", label, err)
	}
	defer body.Close()
	part := file + ".part"
	out, err := os.OpenFile(part, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return "", fmt.Errorf("download %s: %w", label, err)
	}
	h := sha256.New()
	max := s.opts.MaxTarballBytes
	n, err := io.Copy(io.MultiWriter(out, h), io.LimitReader(ctxReader{ctx, body}, max+1))
	if err == nil && n > max {
		err = fmt.Errorf("larger than %d bytes (the limit)", max)
	}
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if got := hex.EncodeToString(h.Sum(nil)); err == nil && got != a.SHA256 {
		err = fmt.Errorf("sha256 is %s, but drover.yaml pins %s: refusing it", got, a.SHA256)
	}
	if err == nil {
		err = os.Rename(part, file)
	}
	if err != nil {
		os.Remove(part)
		return "", fmt.Errorf("download %s: %w", label, err)
	}
	if err := atomicfile.SyncDir(filepath.Dir(file)); err != nil {
		return "", fmt.Errorf("download %s: %w", label, err)
	}
	s.log.Info("downloaded artifact", "url", label, "sha256", a.SHA256, "bytes", n)
	return file, nil
}

// open starts reading an https URL, or an http one when the node's policy
// allows it (Options.ArtifactSchemes). Nothing else: a spec may not name a
// node-local file (file://); the spec refuses it, and this is the second
// line.
func (s *Store) open(ctx context.Context, u *url.URL) (io.ReadCloser, error) {
	if !slices.Contains(s.opts.ArtifactSchemes, u.Scheme) {
		return nil, fmt.Errorf("scheme %q: this node fetches artifacts over %s only", u.Scheme, strings.Join(s.opts.ArtifactSchemes, ", "))
	}
	switch u.Scheme {
	case "https", "http":
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			return nil, err
		}
		resp, err := s.opts.HTTPClient.Do(req)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			return nil, fmt.Errorf("server answered %s", resp.Status)
		}
		if resp.ContentLength > s.opts.MaxTarballBytes {
			resp.Body.Close()
			return nil, fmt.Errorf("%d bytes is larger than %d bytes (the limit)", resp.ContentLength, s.opts.MaxTarballBytes)
		}
		return resp.Body, nil
	}
	return nil, fmt.Errorf("scheme %q: only https and http URLs", u.Scheme)
}

func hashPath(file string) (string, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hash %s: %w", file, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// ctxReader stops a copy once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

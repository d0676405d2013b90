package secrets

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"filippo.io/age"

	"github.com/drover-dev/drover/internal/atomicfile"
)

// Keygen writes a new age identity to file (0600; an existing file is
// refused) and returns its recipient (age1…), the public half.
func Keygen(file string) (recipient string, err error) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return "", err
	}
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("keygen: %w", err)
	}
	_, err = fmt.Fprintf(f, "# drover node identity; public key: %s\n%s\n", id.Recipient(), id)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(file)
		return "", fmt.Errorf("keygen: %w", err)
	}
	return id.Recipient().String(), nil
}

// LoadRecipients reads a recipients file: age recipients (age1…), one per
// line, # comments.
func LoadRecipients(file string) ([]age.Recipient, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	return ParseRecipients(file, data)
}

// EditFile decrypts file (a new file starts empty) into a 0600 file in a
// 0700 temp dir, lets edit change it, and re-encrypts it to the recipients
// of recipientsFile. The clear copy is overwritten and removed whatever
// happens; a failed edit or a file that no longer parses leaves file
// unchanged.
func EditFile(file, recipientsFile, identityFile string, edit func(clearFile string) error) error {
	rs, err := LoadRecipients(recipientsFile)
	if err != nil {
		return err
	}
	var clear []byte
	if ct, err := os.ReadFile(file); err == nil {
		id, err := LoadIdentity(identityFile)
		if err != nil {
			return err
		}
		vs, err := id.Decrypt(file, ct)
		if err != nil {
			return err
		}
		clear = vs.Plain()
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	dir, err := os.MkdirTemp("", "drover-secret-")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, strings.TrimSuffix(filepath.Base(file), ".age"))
	defer func() {
		if fi, err := os.Stat(tmp); err == nil {
			os.WriteFile(tmp, make([]byte, fi.Size()), 0o600)
		}
		os.RemoveAll(dir)
	}()
	err = os.WriteFile(tmp, clear, 0o600)
	Wipe(clear)
	if err != nil {
		return err
	}
	if err := edit(tmp); err != nil {
		return fmt.Errorf("%w; %s left unchanged", err, file)
	}
	edited, err := os.ReadFile(tmp)
	if err != nil {
		return err
	}
	ct, err := Encrypt(file, edited, rs)
	Wipe(edited)
	if err != nil {
		return fmt.Errorf("%w; %s left unchanged", err, file)
	}
	return atomicfile.WriteFile(file, ct, 0o644)
}

// maxEnvFile bounds an env file to encrypt: secrets are a few lines, and
// a larger input is a wrong file (a binary, a dump) rather than secrets.
const maxEnvFile = 1 << 20

// EncryptFile is drover secrets encrypt: the env file read from in (name
// is for its errors) encrypted, armored, to every recipient of
// recipientsFile. The clear bytes are wiped once encrypted.
func EncryptFile(name string, in io.Reader, recipientsFile string) ([]byte, error) {
	rs, err := LoadRecipients(recipientsFile)
	if err != nil {
		return nil, err
	}
	// One buffer, read into and wiped once: a growing one (io.ReadAll)
	// would leave copies of the clear text behind, unwiped.
	buf := make([]byte, maxEnvFile+1)
	defer Wipe(buf)
	n, err := io.ReadFull(in, buf)
	switch {
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
	case err != nil:
		return nil, err // a read error names the file already
	default:
		return nil, fmt.Errorf("%s: larger than %d bytes", name, maxEnvFile)
	}
	return Encrypt(name, buf[:n], rs)
}

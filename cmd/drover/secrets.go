package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"filippo.io/age"

	"github.com/drover-dev/drover/internal/atomicfile"
	"github.com/drover-dev/drover/secrets"
	"github.com/drover-dev/drover/spec"
)

const secretsUsage = `Usage:
  drover secrets keygen -o FILE                          make an age identity (0600); print its recipient
  drover secrets recipients (--identity FILE | --node node.yaml)
                                                         print the recipient (age1…) of a node's identity
  drover secrets encrypt --recipients FILE [-o OUT] [IN]  encrypt an env file (KEY=value lines; default
                                                         stdin) to every recipient in FILE, armored
  drover secrets edit --recipients FILE --identity FILE SECRET.age
                                                         decrypt to a private temp file, run $EDITOR,
                                                         re-encrypt, wipe the temp file

A recipients file lists age recipients (age1…), one per line, # comments: every node's (from
"drover secrets recipients" on that node) and the developers' who edit the secrets.
`

func cmdSecrets(_ context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, secretsUsage)
		return usageError{"missing subcommand: keygen, recipients, encrypt or edit"}
	}
	sub := args[0]
	flags := newFlags("secrets "+sub, stderr)
	flags.Usage = func() {
		fmt.Fprint(stderr, secretsUsage)
		flags.PrintDefaults()
	}
	out := flags.String("o", "", "output file")
	identity := flags.String("identity", "", "age identity file")
	nodeFile := flags.String("node", "", "node.yaml whose secrets.identityFile to use")
	recipients := flags.String("recipients", "", "file of age recipients, one per line")
	switch sub {
	case "keygen", "recipients", "encrypt", "edit":
	case "-h", "--help", "help":
		flags.Usage()
		return flag.ErrHelp
	default:
		fmt.Fprint(stderr, secretsUsage)
		return usageError{fmt.Sprintf("unknown subcommand %q: keygen, recipients, encrypt or edit", sub)}
	}
	if err := parseFlags(flags, args[1:]); err != nil {
		return err
	}
	switch sub {
	case "keygen":
		if *out == "" || flags.NArg() > 0 {
			return usageError{"keygen -o FILE"}
		}
		return secretsKeygen(*out, stdout)
	case "recipients":
		if *nodeFile != "" {
			n, err := spec.LoadNode(*nodeFile)
			if err != nil {
				return err
			}
			if n.Secrets == nil {
				return fmt.Errorf("%s: secrets.identityFile: not set", *nodeFile)
			}
			*identity = n.Secrets.IdentityFile
		}
		if *identity == "" || flags.NArg() > 0 {
			return usageError{"recipients needs --identity FILE or --node node.yaml"}
		}
		id, err := secrets.LoadIdentity(*identity)
		if err != nil {
			return err
		}
		rs, err := id.Recipients()
		if err != nil {
			return err
		}
		for _, r := range rs {
			fmt.Fprintln(stdout, r)
		}
		return nil
	case "encrypt":
		if *recipients == "" || flags.NArg() > 1 {
			return usageError{"encrypt --recipients FILE [-o OUT] [IN]"}
		}
		rs, err := loadRecipients(*recipients)
		if err != nil {
			return err
		}
		name, clear := "stdin", []byte(nil)
		if flags.NArg() == 1 {
			name = flags.Arg(0)
			clear, err = os.ReadFile(name)
		} else {
			clear, err = io.ReadAll(os.Stdin)
		}
		if err != nil {
			return err
		}
		ct, err := secrets.Encrypt(name, clear, rs)
		secrets.Wipe(clear)
		if err != nil {
			return err
		}
		if *out == "" {
			_, err = stdout.Write(ct)
			return err
		}
		return atomicfile.WriteFile(*out, ct, 0o644)
	default: // edit
		if *recipients == "" || *identity == "" || flags.NArg() != 1 {
			return usageError{"edit --recipients FILE --identity FILE SECRET.age"}
		}
		return secretsEdit(flags.Arg(0), *recipients, *identity, stderr)
	}
}

func secretsKeygen(file string, stdout io.Writer) error {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return err
	}
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	_, err = fmt.Fprintf(f, "# drover node identity; public key: %s\n%s\n", id.Recipient(), id)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(file)
		return fmt.Errorf("keygen: %w", err)
	}
	fmt.Fprintln(stdout, id.Recipient())
	return nil
}

func loadRecipients(file string) ([]age.Recipient, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	return secrets.ParseRecipients(file, data)
}

// secretsEdit decrypts file (a new file starts empty) into a 0600 file in a
// 0700 temp dir, runs $EDITOR on it, and re-encrypts it to recipients. The
// clear copy is overwritten and removed whatever happens; a failed editor
// or a file that no longer parses leaves file unchanged.
func secretsEdit(file, recipientsFile, identityFile string, stderr io.Writer) error {
	rs, err := loadRecipients(recipientsFile)
	if err != nil {
		return err
	}
	var clear []byte
	if ct, err := os.ReadFile(file); err == nil {
		id, err := secrets.LoadIdentity(identityFile)
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
	secrets.Wipe(clear)
	if err != nil {
		return err
	}
	editor := os.Getenv("EDITOR")
	if editor == "" {
		editor = "vi"
	}
	// As git does: $EDITOR may carry arguments, so a shell runs it.
	cmd := exec.Command("sh", "-c", editor+` "$@"`, editor, tmp)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("editor %q: %w; %s left unchanged", editor, err, file)
	}
	edited, err := os.ReadFile(tmp)
	if err != nil {
		return err
	}
	ct, err := secrets.Encrypt(file, edited, rs)
	secrets.Wipe(edited)
	if err != nil {
		return fmt.Errorf("%w; %s left unchanged", err, file)
	}
	return atomicfile.WriteFile(file, ct, 0o644)
}

package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"

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
	sub, args, err := subcommand("secrets", args, secretsUsage, stderr, "keygen", "recipients", "encrypt", "edit")
	if err != nil {
		return err
	}
	flags := newFlags("secrets "+sub, stderr)
	setUsage(flags, stderr, secretsUsage+"\nFlags:\n")
	out := flags.String("o", "", "output file")
	identity := flags.String("identity", "", "age identity file")
	nodeFile := flags.String("node", "", "node.yaml whose secrets.identityFile to use")
	recipients := flags.String("recipients", "", "file of age recipients, one per line")
	if err := parseFlags(flags, args); err != nil {
		return err
	}
	switch sub {
	case "keygen":
		if *out == "" || flags.NArg() > 0 {
			return usageError{"keygen -o FILE"}
		}
		r, err := secrets.Keygen(*out)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, r)
		return nil
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
		name, in := "stdin", io.Reader(os.Stdin)
		if flags.NArg() == 1 {
			f, err := os.Open(flags.Arg(0))
			if err != nil {
				return err
			}
			defer f.Close()
			name, in = f.Name(), f
		}
		ct, err := secrets.EncryptFile(name, in, *recipients)
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
		return secrets.EditFile(flags.Arg(0), *recipients, *identity, func(clearFile string) error {
			return runEditor(clearFile, stderr)
		})
	}
}

// runEditor runs $EDITOR (vi without one) on file, as git does: $EDITOR
// may carry arguments, so a shell runs it.
func runEditor(file string, stderr io.Writer) error {
	editor := os.Getenv("EDITOR")
	if editor == "" {
		editor = "vi"
	}
	cmd := exec.Command("sh", "-c", editor+` "$@"`, editor, file)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("editor %q: %w", editor, err)
	}
	return nil
}

package printers

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/drover-dev/drover/migrate"
)

// Migrations is drover migrate status: the revision (desc), whether the
// migration lock is held, then a line per migration by state and the
// counts.
func Migrations(w io.Writer, desc string, rep migrate.Report) {
	fmt.Fprintf(w, "revision    %s\n", desc)
	if rep.Locked {
		fmt.Fprintf(w, "lock        held: migrations are running now\n")
	}
	when := func(r migrate.LedgerRow) string {
		rev := r.Revision
		if !strings.HasPrefix(rev, "dir:") {
			rev = short(rev)
		}
		return fmt.Sprintf("%s by %s, revision %s", dateTime(r.AppliedAt), r.AppliedBy, rev)
	}
	for _, r := range rep.Applied {
		fmt.Fprintf(w, "applied     %-32s %s, %v\n", r.File, when(r), time.Duration(r.DurationMS)*time.Millisecond)
	}
	for _, r := range rep.Mismatched {
		fmt.Fprintf(w, "mismatched  %-32s %s; changed since: ledger sha256 %.12s, file %.12s\n", r.File, when(r), r.Checksum, r.FileChecksum)
	}
	for _, r := range rep.Missing {
		note := "its file is gone"
		if slices.Contains(rep.Ahead, r.Version) {
			note = "newer than every file: a rollback to an older revision, fine"
		}
		fmt.Fprintf(w, "missing     %-32s %s; %s\n", r.File, when(r), note)
	}
	for _, r := range rep.Failed {
		fmt.Fprintf(w, "%-11s %-32s %s: %s\n", r.State, r.File, when(r), firstLine(r.Error))
	}
	for _, p := range rep.Pending {
		fmt.Fprintf(w, "pending     %s\n", p.File)
	}
	fmt.Fprintf(w, "%d applied, %d pending, %d mismatched, %d missing, %d failed\n",
		len(rep.Applied), len(rep.Pending), len(rep.Mismatched), len(rep.Missing), len(rep.Failed))
}

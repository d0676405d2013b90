package migrate

import (
	"fmt"
	"path"
	"time"
)

// LedgerRow is one ledger row in a Report (drover migrate status -o json:
// the JSON names are a public format).
type LedgerRow struct {
	Version    int64     `json:"version"`
	File       string    `json:"file"`
	State      string    `json:"state"`
	Checksum   string    `json:"checksum"`
	AppliedAt  time.Time `json:"appliedAt"`
	AppliedBy  string    `json:"appliedBy"`
	Revision   string    `json:"revision"`
	DurationMS int64     `json:"durationMs"`
	Error      string    `json:"error,omitempty"`
	// FileChecksum is the file's, for a mismatched migration.
	FileChecksum string `json:"fileChecksum,omitempty"`
}

// PendingFile is a migration not applied yet, in a Report.
type PendingFile struct {
	Version int64  `json:"version"`
	File    string `json:"file"`
}

// Report is a Status told for people and scripts (drover migrate status,
// its -o json): the ledger against the files, and why Up would refuse.
// Its lists are empty, never nil, so that JSON shows [] rather than null.
type Report struct {
	Revision   string        `json:"revision"`
	Locked     bool          `json:"locked"`
	Applied    []LedgerRow   `json:"applied"`
	Pending    []PendingFile `json:"pending"`
	Mismatched []LedgerRow   `json:"mismatched"`
	// Missing are applied migrations without a file; Ahead tells those
	// newer than every file (a rollback to an older revision: fine).
	Missing []LedgerRow `json:"missing"`
	Ahead   []int64     `json:"ahead"`
	Failed  []LedgerRow `json:"failed"`
	// Problems are why Up (drover migrate up, and a rollout) would refuse
	// to run; drover migrate status exits 1 when there is any.
	Problems []string `json:"problems"`
}

func ledgerRow(r Record) LedgerRow {
	return LedgerRow{Version: r.Version, File: r.File, State: r.State, Checksum: r.Checksum, AppliedAt: r.AppliedAt,
		AppliedBy: r.Node, Revision: r.Revision, DurationMS: r.Duration.Milliseconds(), Error: r.Error}
}

// NewReport is the Report of st, the Status of the migrations ms of
// revision rev. Its Problems are the rules by which Up refuses (see plan),
// stated for people with what to do about each.
func NewReport(rev string, ms []Migration, st Status) Report {
	rep := Report{Revision: rev, Locked: st.Locked, Applied: []LedgerRow{}, Pending: []PendingFile{},
		Mismatched: []LedgerRow{}, Missing: []LedgerRow{}, Ahead: []int64{}, Failed: []LedgerRow{}, Problems: []string{}}
	var newestFile, newestApplied int64
	for _, m := range ms {
		newestFile = max(newestFile, m.Version)
	}
	for _, r := range st.Applied {
		rep.Applied = append(rep.Applied, ledgerRow(r))
		newestApplied = max(newestApplied, r.Version)
	}
	for _, d := range st.Mismatched {
		r := ledgerRow(d.Record)
		r.FileChecksum = d.Migration.Checksum
		rep.Mismatched = append(rep.Mismatched, r)
		newestApplied = max(newestApplied, r.Version)
		rep.Problems = append(rep.Problems, fmt.Sprintf("%s changed after it was applied (on %s at %s): restore it and add a new migration",
			d.Migration.File, r.AppliedBy, r.AppliedAt.UTC().Format(time.RFC3339)))
	}
	for _, r := range st.Missing {
		rep.Missing = append(rep.Missing, ledgerRow(r))
		newestApplied = max(newestApplied, r.Version)
		if r.Version > newestFile {
			rep.Ahead = append(rep.Ahead, r.Version)
			continue
		}
		rep.Problems = append(rep.Problems, fmt.Sprintf("%s was applied (on %s) but its file is gone while newer files exist: restore it",
			r.File, r.Node))
	}
	for _, r := range st.Failed {
		rep.Failed = append(rep.Failed, ledgerRow(r))
		newestApplied = max(newestApplied, r.Version)
		switch {
		case r.State == StateRunning && st.Locked:
			// an up is running it right now
		case r.State == StateRunning:
			rep.Problems = append(rep.Problems, fmt.Sprintf("%s was interrupted (started on %s at %s without a transaction): check the schema, "+
				"finish or undo it by hand, then drover migrate resolve %d --done|--retry", r.File, r.Node, r.AppliedAt.UTC().Format(time.RFC3339), r.Version))
		default:
			rep.Problems = append(rep.Problems, fmt.Sprintf("%s failed (on %s at %s): %s; repair the schema, then drover migrate resolve %d --retry|--done",
				r.File, r.Node, r.AppliedAt.UTC().Format(time.RFC3339), r.Error, r.Version))
		}
	}
	for _, m := range st.Pending {
		rep.Pending = append(rep.Pending, PendingFile{Version: m.Version, File: path.Base(m.File)})
	}
	for _, m := range st.Pending {
		if m.Version < newestApplied {
			rep.Problems = append(rep.Problems, fmt.Sprintf("%s is pending but older than applied version %d: renumber it above %d",
				m.File, newestApplied, newestApplied))
		}
	}
	return rep
}

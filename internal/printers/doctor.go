package printers

import (
	"fmt"
	"io"
	"strings"

	"github.com/drover-dev/drover/doctor"
)

// DoctorResult writes "STATUS CHECK: detail" and, unless it passed, an
// indented "fix:" line; a detail of several lines is indented under it.
func DoctorResult(w io.Writer, r doctor.Result) {
	detail := strings.ReplaceAll(strings.TrimSpace(r.Detail), "\n", "\n      ")
	fmt.Fprintf(w, "%-4s  %s: %s\n", r.Status, r.Check, detail)
	if r.Status != doctor.Pass && r.Fix != "" {
		fmt.Fprintf(w, "      fix: %s\n", r.Fix)
	}
}

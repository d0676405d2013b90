package reconcile

import (
	"errors"
	"fmt"
	"testing"
)

// revErr says itself whether the revision is at fault, as migrate's
// RevisionError does (migrate does not import reconcile).
type revErr struct{ fault bool }

func (revErr) Error() string         { return `ERROR: column "email" already exists` }
func (e revErr) RevisionFault() bool { return e.fault }

func TestIsBadRevisionRecognizesRevisionFault(t *testing.T) {
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"marked", BadRevision(errors.New("x")), true},
		{"revision fault", revErr{fault: true}, true},
		{"wrapped revision fault", fmt.Errorf("migrate: %w", revErr{fault: true}), true},
		{"RevisionFault false", revErr{fault: false}, false},
		{"plain", errors.New("connection refused"), false},
		{"nil", nil, false},
	} {
		if got := IsBadRevision(c.err); got != c.want {
			t.Errorf("%s: IsBadRevision = %v, want %v", c.name, got, c.want)
		}
	}
}

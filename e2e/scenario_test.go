//go:build e2e

package e2e

import (
	"fmt"
	"path/filepath"
	"runtime"
	"testing"
)

// scenarioT is a scenario's *testing.T that also keeps its failures, so
// that TestCluster can say them again after the journals it prints when a
// scenario fails: CI shows only the tail of the output, and the journals
// would push the failures out of it.
type scenarioT struct {
	*testing.T
	fails []string
}

// note keeps msg with the place that failed: the caller of the caller of
// note (a scenario, or a helper that failed on its behalf).
func (t *scenarioT) note(msg string) {
	if _, file, line, ok := runtime.Caller(2); ok {
		msg = fmt.Sprintf("%s:%d: %s", filepath.Base(file), line, msg)
	}
	t.fails = append(t.fails, msg)
}

func (t *scenarioT) Errorf(format string, args ...any) {
	t.Helper()
	t.note(fmt.Sprintf(format, args...))
	t.T.Errorf(format, args...)
}

func (t *scenarioT) Error(args ...any) {
	t.Helper()
	t.note(fmt.Sprint(args...))
	t.T.Error(args...)
}

func (t *scenarioT) Fatalf(format string, args ...any) {
	t.Helper()
	t.note(fmt.Sprintf(format, args...))
	t.T.Fatalf(format, args...)
}

func (t *scenarioT) Fatal(args ...any) {
	t.Helper()
	t.note(fmt.Sprint(args...))
	t.T.Fatal(args...)
}

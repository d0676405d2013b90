package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
)

// TestCommandLineRefusals: a stray argument, a bad flag or -h is answered
// before node.yaml is read (it does not exist here), with exit 2 and the
// reason, or exit 0 and the usage.
func TestCommandLineRefusals(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "node.yaml")
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"status", "--config", missing, "extra"}, exitUsage, "drover status: unexpected arguments: extra"},
		{[]string{"sync", "--config", missing, "now"}, exitUsage, "drover sync: unexpected arguments: now"},
		{[]string{"history", "--config", missing, "-n", "-1"}, exitUsage, "-n must not be negative"},
		{[]string{"plan", "--config", missing, "-o", "yaml"}, exitUsage, `invalid value "yaml" for flag -o: must be text or json`},
		{[]string{"version", "x"}, exitUsage, "drover version: unexpected arguments: x"},
		{[]string{"pin", "--config", missing}, exitUsage, "give exactly one REV"},
		{[]string{"agent", "--bogus"}, exitUsage, "flag provided but not defined: -bogus"},
		{[]string{"doctor", "-h"}, exitOK, "Usage: drover doctor"},
		{[]string{"migrate", "resolve", "--config", missing, "3"}, exitUsage, "resolve needs one of --retry or --done"},
		{[]string{"nope"}, exitUsage, `unknown command "nope"`},
	} {
		var stdout, stderr bytes.Buffer
		code := run(t.Context(), c.args, &stdout, &stderr)
		if code != c.code || !strings.Contains(stderr.String(), c.want) {
			t.Errorf("drover %s: exit %d, want %d with %q:\n%s", strings.Join(c.args, " "), code, c.code, c.want, stderr.String())
		}
		if stdout.Len() > 0 {
			t.Errorf("drover %s printed to stdout: %q", strings.Join(c.args, " "), stdout.String())
		}
	}
}

// Package revid writes commit ids for people.
package revid

import "strings"

// Short abbreviates a commit id for people: its first 12 characters,
// "(none)" for no revision.
func Short(rev string) string {
	if len(rev) > 12 {
		return rev[:12]
	}
	if rev == "" {
		return "(none)"
	}
	return strings.TrimSpace(rev)
}

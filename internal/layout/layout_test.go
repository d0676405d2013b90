package layout

import "testing"

// TestPaths pins every path to README's contract: a change here is a change
// of the contract.
func TestPaths(t *testing.T) {
	l := New("/var/lib/drover")
	for _, c := range [][2]string{
		{l.Current(), "/var/lib/drover/current"},
		{l.Previous(), "/var/lib/drover/previous"},
		{l.Releases(), "/var/lib/drover/releases"},
		{l.Release("abc"), "/var/lib/drover/releases/abc"},
		{l.ReleaseSpec("abc"), "/var/lib/drover/releases/abc/drover.yaml"},
		{l.SecretsEnv("abc", "api"), "/var/lib/drover/releases/abc/secrets/api.env"},
		{l.Journal(), "/var/lib/drover/journal.json"},
		{l.Workers(), "/var/lib/drover/workers.json"},
		{l.Status(), "/var/lib/drover/status.json"},
		{l.Halted(), "/var/lib/drover/halted.json"},
		{l.Pin(), "/var/lib/drover/pin.json"},
		{l.History(), "/var/lib/drover/history.json"},
		{l.AgentPID(), "/var/lib/drover/agent.pid"},
		{l.Units(), "/var/lib/drover/units.json"},
		{l.LBDir(), "/var/lib/drover/lb"},
		{l.LBUp(), "/var/lib/drover/lb/up"},
		{l.LBDrain(), "/var/lib/drover/lb/drain"},
		{l.HealthLog(), "/var/lib/drover/lb/health.log"},
		{l.TrafficLog(), "/var/lib/drover/lb/traffic.log"},
		{l.Git(), "/var/lib/drover/git"},
		{l.GitVerified(), "/var/lib/drover/git.verified"},
		{l.GitCLI(), "/var/lib/drover/git-cli"},
		{l.Signers(), "/var/lib/drover/signers.json"},
		{SiteDir("/var/lib/drover/current", "blog"), "/var/lib/drover/current/sites/blog"},
		{WorkerDir("/var/lib/drover/releases/abc", "api"), "/var/lib/drover/releases/abc/workers/api"},
		{MigrationsDir("/var/lib/drover/releases/abc"), "/var/lib/drover/releases/abc/db/migrations"},
		{SecretsEnvFile("/var/lib/drover/current", "api"), "/var/lib/drover/current/secrets/api.env"},
	} {
		if got, want := c[0], c[1]; got != want {
			t.Errorf("got %s, want %s", got, want)
		}
	}
}

// TestLinkRevision reads the targets the release store writes for current
// and previous, and refuses the others rather than naming a wrong release.
func TestLinkRevision(t *testing.T) {
	for target, want := range map[string]string{
		"releases/0123abc": "0123abc",
		"releases/":        "",
		"releases/a/b":     "",
		"/srv/releases/a":  "",
		"elsewhere/a":      "",
		"releases":         "",
		"":                 "",
	} {
		rev, ok := LinkRevision(target)
		if rev != want || ok != (want != "") {
			t.Errorf("LinkRevision(%q) = %q, %v; want %q, %v", target, rev, ok, want, want != "")
		}
	}
}

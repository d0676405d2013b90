// Package layout names the paths of drover's state dir (stateDir of
// node.yaml): the contract of README's table "The contract: files drover
// guarantees on a node", and the few other state files beside them. Every
// package that reads or writes one of them takes its path from here (or,
// for a step package, from a Config field package agent fills from here), so
// the contract is written down once.
//
// The package imports nothing of drover's: it is only paths.
package layout

import (
	"path/filepath"
	"strings"
)

// Layout is the state dir's paths; Dir is the state dir itself.
type Layout struct{ Dir string }

// New returns the layout of stateDir.
func New(stateDir string) Layout { return Layout{Dir: stateDir} }

func (l Layout) join(elem ...string) string {
	return filepath.Join(append([]string{l.Dir}, elem...)...)
}

// Current is STATE/current: symlink to releases/<revision>, the live release; replaced only by rename.
func (l Layout) Current() string { return l.join(CurrentLink) }

// Previous is STATE/previous: symlink to the release live before current (rollback's fallback).
func (l Layout) Previous() string { return l.join(PreviousLink) }

// Releases is STATE/releases: one directory per kept release.
func (l Layout) Releases() string { return l.join(ReleasesDir) }

// Release is STATE/releases/<revision>: a release's sites, workers, spec and secrets.
func (l Layout) Release(rev string) string { return l.join(ReleasesDir, rev) }

// ReleaseSpec is STATE/releases/<revision>/drover.yaml: the spec the release was made from.
func (l Layout) ReleaseSpec(rev string) string { return SpecFile(l.Release(rev)) }

// SecretsEnv is STATE/releases/<revision>/secrets/<worker>.env: a worker's decrypted secretEnv.
func (l Layout) SecretsEnv(rev, worker string) string {
	return SecretsEnvFile(l.Release(rev), worker)
}

// Journal is STATE/journal.json: present only while a change is in flight.
func (l Layout) Journal() string { return l.join("journal.json") }

// Crashes is STATE/crashes.json: how often an agent stopped mid-change
// putting one revision live, kept across the journal's clearing.
func (l Layout) Crashes() string { return l.join("crashes.json") }

// Workers is STATE/workers.json: where the live release's workers run when not their port range through current.
func (l Layout) Workers() string { return l.join("workers.json") }

// Status is STATE/status.json: the node's last reported state, without a cluster.
func (l Layout) Status() string { return l.join("status.json") }

// Halted is STATE/halted.json: revisions that failed and will not be applied again, without a cluster.
func (l Layout) Halted() string { return l.join("halted.json") }

// Pin is STATE/pin.json: the pin (drover pin, rollback), without a cluster.
func (l Layout) Pin() string { return l.join("pin.json") }

// History is STATE/history.json: the history (drover history), without a cluster.
func (l Layout) History() string { return l.join("history.json") }

// AgentPID is STATE/agent.pid: the running agent, which drover sync signals without a cluster.
func (l Layout) AgentPID() string { return l.join("agent.pid") }

// Units is STATE/units.json: the worker units drover installed.
func (l Layout) Units() string { return l.join("units.json") }

// LBDir is STATE/lb: the load balancer's health files and nginx's logs of the LB and traffic.
func (l Layout) LBDir() string { return l.join("lb") }

// LBUp is STATE/lb/up: present while the node is healthy (the health endpoint answers 200).
func (l Layout) LBUp() string { return UpFile(l.LBDir()) }

// LBDrain is STATE/lb/drain: present while the node is drained (the health endpoint answers 503).
func (l Layout) LBDrain() string { return DrainFile(l.LBDir()) }

// HealthLog is STATE/lb/health.log: nginx's log of the LB's health checks.
func (l Layout) HealthLog() string { return l.join("lb", "health.log") }

// TrafficLog is STATE/lb/traffic.log: nginx's line per request while the live spec has rollout.canary.
func (l Layout) TrafficLog() string { return l.join("lb", "traffic.log") }

// Git is STATE/git: the agent's git store.
func (l Layout) Git() string { return l.join("git") }

// GitVerified is STATE/git.verified: commits whose signatures were verified.
func (l Layout) GitVerified() string { return VerifiedFile(l.Git()) }

// GitCLI is STATE/git-cli: the CLI's git store (drover migrate, pin), apart from the agent's.
func (l Layout) GitCLI() string { return l.join("git-cli") }

// Signers is STATE/signers.json: who signed each accepted revision.
func (l Layout) Signers() string { return l.join("signers.json") }

// The names, inside the state dir, of the release links and directory.
const (
	CurrentLink  = "current"
	PreviousLink = "previous"
	ReleasesDir  = "releases"
)

// LinkRevision is the revision that target, the target of a release link
// (current, previous: releases/<revision>, relative to the state dir),
// names; ok is false when target is not of that shape. It checks the
// shape only: whether rev is a commit id, and whether the release exists,
// are the reader's to judge.
func LinkRevision(target string) (rev string, ok bool) {
	rev, ok = strings.CutPrefix(target, ReleasesDir+"/")
	if !ok || rev == "" || strings.Contains(rev, "/") {
		return "", false
	}
	return rev, true
}

// SiteDir is <release>/sites/<site>/: a site's files, as nginx serves them (through current).
func SiteDir(releaseDir, site string) string { return filepath.Join(releaseDir, "sites", site) }

// WorkerDir is <release>/workers/<worker>/: a worker's bundle, its working directory (through current).
func WorkerDir(releaseDir, worker string) string {
	return filepath.Join(releaseDir, "workers", worker)
}

// MigrationsDir is <release>/db/migrations/: the revision's migrations.
func MigrationsDir(releaseDir string) string { return filepath.Join(releaseDir, "db", "migrations") }

// SpecFile is <release>/drover.yaml, in any release directory (or current).
func SpecFile(releaseDir string) string { return filepath.Join(releaseDir, "drover.yaml") }

// SecretsEnvFile is <release>/secrets/<worker>.env, in any release directory (or current).
func SecretsEnvFile(releaseDir, worker string) string {
	return filepath.Join(releaseDir, "secrets", worker+".env")
}

// UpFile is <lb>/up in the LB health directory lbDir.
func UpFile(lbDir string) string { return filepath.Join(lbDir, "up") }

// DrainFile is <lb>/drain in the LB health directory lbDir.
func DrainFile(lbDir string) string { return filepath.Join(lbDir, "drain") }

// VerifiedFile is the list of verified commits beside the git store gitDir.
func VerifiedFile(gitDir string) string { return gitDir + ".verified" }

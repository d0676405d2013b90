// Package sandbox is the systemd sandbox drover puts around code that a
// push to the config repo controls: the workers' instances (package units)
// and their install steps (package artifacts). It is a leaf, so that
// neither of those packages imports the other for it.
package sandbox

// MetadataAddr is the cloud metadata service (DigitalOcean, AWS, GCP,
// Azure): it hands out the droplet's user data and, elsewhere, credentials.
const MetadataAddr = "169.254.169.254"

// EtcDir holds node.yaml and the node's secrets; no worker or install step
// reads it.
const EtcDir = "/etc/drover"

// Settings are the unit settings of every worker's sandbox that do not
// depend on its paths or limits (units' hardening adds those); install
// steps run in transient units with the same (package artifacts).
func Settings() []string {
	return []string{
		"NoNewPrivileges=yes",
		"CapabilityBoundingSet=",
		"AmbientCapabilities=",
		"ProtectSystem=strict",
		"ProtectHome=yes",
		"PrivateTmp=yes",
		"PrivateDevices=yes",
		"DevicePolicy=closed",
		"ProtectKernelTunables=yes",
		"ProtectKernelModules=yes",
		"ProtectKernelLogs=yes",
		"ProtectControlGroups=yes",
		"ProtectClock=yes",
		"ProtectHostname=yes",
		"ProtectProc=invisible",
		"ProcSubset=pid",
		"RestrictNamespaces=yes",
		"RestrictRealtime=yes",
		"RestrictSUIDSGID=yes",
		"LockPersonality=yes",
		"RemoveIPC=yes",
		"KeyringMode=private",
		"UMask=0077",
		"RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
		"SystemCallArchitectures=native",
		"SystemCallFilter=@system-service",
		"SystemCallFilter=~@privileged @resources @mount @swap @reboot @raw-io @module @obsolete @cpu-emulation @debug",
		"SystemCallErrorNumber=EPERM",
		"IPAddressDeny=" + MetadataAddr,
	}
}

package nginxconf

import "github.com/drover-dev/drover/traffic"

// trafficLog writes the per-request log of the sites and routes (see package
// traffic): a line in traffic.LogFormat per request, to a file the agent
// follows, written by nginx in 64 KiB batches at most a second apart (one
// write per few hundred requests; a syslog datagram per request cost nginx
// 9% CPU and the node 24% of its throughput, docs/benchmarks.md). The
// health, status and catch-all servers turn it off (access_log off).
func (r *renderer) trafficLog() {
	p := r.p
	if p.TrafficLog == "" {
		return
	}
	r.line("log_format drover_traffic %s;", quote(traffic.LogFormat))
	r.line("access_log %s drover_traffic buffer=64k flush=1s;", r.absPath("trafficLog", p.TrafficLog))
}

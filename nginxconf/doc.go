// Package nginxconf renders drover's nginx configuration from the spec and
// installs it without ever leaving nginx on a configuration it refused.
//
// The contract:
//
//   - drover owns the whole main config file (node.yaml nginx.config). Render
//     returns a complete nginx.conf with no `daemon` directive. The same
//     Params always give the same bytes (every list and map is sorted), so an
//     unchanged spec never causes a write or a reload. Render refuses, with an
//     error naming the field, any value that could end or extend a directive
//     (quote, backslash, $, backtick, control characters), even though the
//     spec validator already did: the package is safe on its own.
//   - What the rendered nginx serves: each site on HTTPSPort (TLS when a
//     certificate is given) from LiveDir/sites/<name>; each worker route
//     proxied to the upstream drover_<worker> (instances 127.0.0.1:port+n,
//     a failing instance is skipped); on HealthPort only the load balancer's
//     health endpoint, answering 200 while HealthDir/up exists and
//     HealthDir/drain does not, 503 otherwise; any host nobody serves is
//     refused (TLS handshake rejected, or the connection closed).
//   - Install writes a candidate beside the live file, runs `nginx -t` on it,
//     and only then renames it over the live file and reloads. When any step
//     fails, the live file is byte-for-byte what it was and nginx keeps
//     serving its previous configuration.
//   - Reload returns once nginx serves the new configuration to every new
//     connection: the master has started worker processes of the new
//     generation and every worker of the old one has stopped accepting
//     connections (nginx retitles it "worker process is shutting down"), as
//     read from /proc.
//   - Server is one node's nginx for the rollout: NewServer takes the node's
//     settings (ServerConfig) and renders each spec with them (the node's
//     certificate, else a self-signed one, else the spec's; the revision
//     header from the live link), tests it beside the live file (Check),
//     installs it (Apply) and says how the installed one drifted (Drift).
package nginxconf

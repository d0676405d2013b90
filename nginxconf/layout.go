package nginxconf

import (
	"cmp"
	"fmt"
	"net"
	"path"
	"slices"
	"strings"

	"github.com/drover-dev/drover/internal/healthlog"
	"github.com/drover-dev/drover/internal/layout"
	"github.com/drover-dev/drover/spec"
)

// server is one server block on HTTPSPort: a site's, or one grouping the
// routes (and the webhook) of a host no site serves.
type server struct {
	field string
	names []string
	site  *spec.Site // nil for a server of routes only
	locs  []location
}

// location is a proxied path inside a server: a worker route or the webhook.
type location struct {
	field    string
	path     string
	exact    bool   // location = path
	upstream string // worker name; "" for the webhook
}

// model groups sites, routes and the webhook into server blocks, sorted so
// the output does not depend on the order of the spec's lists.
func (r *renderer) model() (sites, hosts []*server) {
	s := r.p.Spec
	byHost := map[string]*server{}
	for _, i := range sortedBy(s.Sites, func(x spec.Site) string { return x.Name }) {
		site := &s.Sites[i]
		f := fmt.Sprintf("sites[%d]", i)
		r.check(f+".name", nameMsg(site.Name))
		if len(site.ServerNames) == 0 {
			r.fail(f+".serverNames", "at least one server name is required")
		}
		srv := &server{field: f, names: site.ServerNames, site: site}
		for j, h := range site.ServerNames {
			hf := fmt.Sprintf("%s.serverNames[%d]", f, j)
			if r.check(hf, checkServerName(h)) && byHost[h] != nil {
				r.fail(hf, fmt.Sprintf("server name %q is already served by %s", h, byHost[h].field))
			}
			byHost[h] = srv
		}
		sites = append(sites, srv)
	}
	host := func(field, name string) *server {
		if srv := byHost[name]; srv != nil {
			return srv
		}
		srv := &server{field: field, names: []string{name}}
		byHost[name] = srv
		hosts = append(hosts, srv)
		return srv
	}
	for _, i := range sortedBy(s.Workers, func(x spec.Worker) string { return x.Name }) {
		w := &s.Workers[i]
		r.check(fmt.Sprintf("workers[%d].name", i), nameMsg(w.Name))
		for j, rt := range w.Routes {
			f := fmt.Sprintf("workers[%d].routes[%d]", i, j)
			okHost := r.check(f+".serverName", checkServerName(rt.ServerName))
			okPath := r.checkPath(f+".path", rt.Path)
			if okHost && okPath {
				srv := host(f, rt.ServerName)
				srv.locs = append(srv.locs, location{field: f, path: rt.Path, upstream: w.Name})
			}
		}
	}
	if wh := r.p.Webhook; wh != nil {
		okHost := r.check("webhook.serverName", checkServerName(wh.ServerName))
		okPath := r.checkPath("webhook.path", wh.Path)
		r.check("webhook.upstream", checkHostPort(wh.Upstream))
		if okHost && okPath {
			srv := host("webhook", wh.ServerName)
			srv.locs = append(srv.locs, location{field: "webhook", path: wh.Path, exact: true})
		}
	}
	slices.SortFunc(hosts, func(a, b *server) int { return cmp.Compare(a.names[0], b.names[0]) })
	for _, srv := range byHost {
		slices.SortFunc(srv.locs, func(a, b location) int {
			if c := cmp.Compare(a.path, b.path); c != 0 {
				return c
			}
			return cmp.Compare(boolInt(a.exact), boolInt(b.exact))
		})
		for k, l := range srv.locs {
			switch {
			case k > 0 && srv.locs[k-1].path == l.path && srv.locs[k-1].exact == l.exact:
				r.fail(l.field, fmt.Sprintf("path %s of %s is already taken by %s", l.path, srv.names[0], srv.locs[k-1].field))
			case srv.site != nil && l.path == "/" && !l.exact:
				r.fail(l.field, fmt.Sprintf("path / of %s is served by %s", srv.names[0], srv.field))
			}
		}
	}
	return sites, hosts
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// sortedBy returns the indices of xs in the order of key.
func sortedBy[T any](xs []T, key func(T) string) []int {
	idx := make([]int, len(xs))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(key(xs[a]), key(xs[b])) })
	return idx
}

func nameMsg(name string) string {
	if !nameRE.MatchString(name) {
		return fmt.Sprintf("%q is not a name of lowercase letters, digits and dashes", name)
	}
	return ""
}

func (r *renderer) checkPath(field, p string) bool {
	if !urlPathRE.MatchString(p) {
		r.fail(field, fmt.Sprintf("%q is not a URL path such as /api/", p))
		return false
	}
	return true
}

// write lays out the whole file.
func (r *renderer) write(sites, hosts []*server) {
	p := r.p
	r.line("# Written by drover from the spec of this node's live release, and")
	r.line("# rewritten on every revision: do not edit it. Put additions in a file")
	r.line("# matched by node.yaml nginx.includes.")
	r.line("")
	if p.User != "" {
		r.line("user %s;", r.q("user", p.User))
	}
	r.line("worker_processes auto;")
	if p.PIDFile != "" {
		r.line("pid %s;", r.absPath("pidFile", p.PIDFile))
	}
	if p.ErrorLog != "" {
		r.line("error_log %s;", r.q("errorLog", p.ErrorLog))
	}
	r.line("")
	r.open("events")
	r.line("worker_connections 1024;")
	r.close()
	r.line("")
	r.open("http")
	r.httpSettings()
	for _, i := range sortedBy(p.Spec.Workers, func(x spec.Worker) string { return x.Name }) {
		r.upstream(&p.Spec.Workers[i])
	}
	r.healthServer()
	if p.StatusListen != "" {
		r.statusServer()
	}
	r.catchAll()
	for _, srv := range sites {
		r.server(srv)
	}
	for _, srv := range hosts {
		r.server(srv)
	}
	r.close()
}

func (r *renderer) httpSettings() {
	p := r.p
	r.line("server_tokens off;")
	r.line("sendfile on;")
	r.line("tcp_nopush on;")
	r.line("keepalive_timeout 65s;")
	if s := p.Spec.Nginx.ClientMaxBodySize; s != "" {
		r.line("client_max_body_size %s;", r.q("nginx.clientMaxBodySize", s))
	}
	if p.AccessLog != "" {
		r.line("access_log %s;", r.q("accessLog", p.AccessLog))
	} else if p.TrafficLog == "" {
		r.line("access_log off;")
	}
	r.trafficLog()
	if p.HealthAccessLog != "" {
		r.line("log_format drover_health %s;", quote(healthlog.Format))
	}
	r.line("gzip on;")
	r.line("gzip_vary on;")
	r.line("gzip_types text/css text/plain text/xml application/javascript application/json application/xml image/svg+xml;")
	r.line("default_type application/octet-stream;")
	r.open("types")
	for _, t := range mimeTypes {
		r.line("%s;", t)
	}
	r.close()
	if p.TempDir != "" {
		r.line("")
		dir := r.checkAbs("tempDir", p.TempDir)
		for _, kind := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
			r.line("%s_temp_path %s;", kind, quote(path.Join(dir, kind)))
		}
	}
	r.line("")
	if r.tls() {
		r.line("ssl_certificate %s;", r.absPath("tlsCert", p.TLSCert))
		r.line("ssl_certificate_key %s;", r.absPath("tlsKey", p.TLSKey))
		r.line("ssl_protocols TLSv1.2 TLSv1.3;")
		r.line("ssl_prefer_server_ciphers off;")
		r.line("ssl_session_cache shared:drover_tls:10m;")
		r.line("ssl_session_timeout 1d;")
		r.line("ssl_session_tickets off;")
	} else {
		r.line("# No TLS certificate was given: the sites are served over plain HTTP on")
		r.line("# port %d. This is for development only.", p.HTTPSPort)
	}
	r.line("")
	r.line("# Upgrade proxied connections that ask for it (WebSocket), and keep the")
	r.line("# others alive to the upstream.")
	r.open("map $http_upgrade $drover_connection")
	r.line("default upgrade;")
	r.line(`"" "";`)
	r.close()
	if len(p.Includes) > 0 {
		r.line("")
		r.line("# The operator's additions (node.yaml nginx.includes).")
		for i, inc := range p.Includes {
			r.line("include %s;", r.absPath(fmt.Sprintf("includes[%d]", i), inc))
		}
	}
}

func (r *renderer) upstream(w *spec.Worker) {
	if !nameRE.MatchString(w.Name) {
		return // reported by model
	}
	r.line("")
	r.open("upstream drover_%s", w.Name)
	if w.Instances < 1 {
		r.fail("workers."+w.Name+".instances", "at least one instance is needed")
	}
	for _, port := range w.InstancePorts() {
		if port < 1 || port > 65535 {
			r.fail("workers."+w.Name+".port", fmt.Sprintf("port %d is not between 1 and 65535", port))
		}
		// A failed instance (restarting) is left alone for 2 s; with a
		// single instance nginx ignores this and always tries it.
		r.line("server 127.0.0.1:%d max_fails=1 fail_timeout=2s;", port)
	}
	r.line("keepalive 16;")
	// Close idle connections to a worker before the worker does: an app
	// server closes an idle keep-alive connection after its own timeout
	// (Node.js 5 s, gunicorn 2 s), and a request nginx sends on it at that
	// moment fails. nginx retries a GET on the next instance, but never a
	// POST (it may have been applied): the client would get a 502.
	r.line("keepalive_timeout 1s;")
	r.close()
}

func (r *renderer) healthServer() {
	p := r.p
	dir := r.checkAbs("healthDir", p.HealthDir)
	r.line("")
	r.line("# The load balancer's health endpoint, and nothing else: 200 while")
	r.line("# HealthDir/up exists (the node is healthy) and HealthDir/drain does not.")
	r.open("server")
	r.line("listen %s default_server;", r.listen(p.HealthPort))
	r.line("access_log off;")
	r.line("")
	r.open("location = %s", r.q("nginx.healthPath", p.Spec.Nginx.HealthPath))
	r.line("default_type text/plain;")
	if p.HealthAccessLog != "" {
		r.line("access_log %s drover_health;", quote(r.checkAbs("healthAccessLog", p.HealthAccessLog)))
	}
	r.open("if (-f %s)", quote(layout.DrainFile(dir)))
	r.line(`return 503 "draining\n";`)
	r.close()
	r.line("root %s;", quote(dir))
	r.line("try_files /up =503;")
	r.close()
	r.line("")
	r.open("location /")
	r.line("return 404;")
	r.close()
	r.close()
}

func (r *renderer) statusServer() {
	r.line("")
	r.line("# Local only: nginx's connection counts, read during a drain.")
	r.open("server")
	r.line("listen %s;", r.p.StatusListen)
	r.line("access_log off;")
	r.line("")
	r.open("location = %s", StatusPath)
	r.line("stub_status;")
	r.line("allow 127.0.0.0/8;")
	r.line("allow ::1;")
	r.line("deny all;")
	r.close()
	r.line("")
	r.open("location /")
	r.line("return 404;")
	r.close()
	r.close()
}

// catchAll answers requests for a host that no site or route serves.
func (r *renderer) catchAll() {
	r.line("")
	if r.tls() {
		r.line("# Hosts nobody serves: refuse the TLS handshake, so no certificate is")
		r.line("# shown to scanners and no site answers for a name it does not own.")
	} else {
		r.line("# Hosts nobody serves: close the connection without a response.")
	}
	r.open("server")
	r.line("listen %s default_server;", r.siteListen())
	if r.tls() {
		r.line("ssl_reject_handshake on;")
	}
	r.line("access_log off;")
	r.line("return 444;")
	r.close()
}

func (r *renderer) server(srv *server) {
	r.line("")
	if srv.site != nil {
		r.line("# site %s", srv.site.Name)
	} else {
		r.line("# %s: routes only, no site", srv.names[0])
	}
	r.open("server")
	r.line("listen %s;", r.siteListen())
	names := make([]string, len(srv.names))
	for i, n := range srv.names {
		names[i] = r.q(srv.field+".serverNames", n)
	}
	r.line("server_name %s;", strings.Join(names, " "))
	r.revisionHeaders()
	if site := srv.site; site != nil {
		r.line("root %s;", quote(layout.SiteDir(r.checkAbs("liveDir", r.p.LiveDir), site.Name)))
		r.line("# A second line behind drover's own check of every link: a link")
		r.line("# someone else left in the site (owned by another user than its")
		r.line("# target) is not followed. The root itself goes through current.")
		r.line("disable_symlinks if_not_owner from=$document_root;")
		r.line("index index.html;")
		r.line("")
		r.open("location /")
		keys := make([]string, 0, len(site.Headers))
		for k := range site.Headers {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			hf := fmt.Sprintf("%s.headers[%q]", srv.field, k)
			if !headerNameRE.MatchString(k) {
				r.fail(hf, fmt.Sprintf("%q is not a header name", k))
			}
			r.line("add_header %s %s always;", r.q(hf, k), r.q(hf, site.Headers[k]))
		}
		if len(keys) > 0 {
			// A location's own add_header hides the server's.
			r.revisionHeaders()
		}
		if site.SPA {
			r.line("try_files $uri $uri/ /index.html;")
		} else {
			r.line("try_files $uri $uri/ =404;")
		}
		r.line("# Hidden files (.env, .git) are never served; /.well-known/ is.")
		r.open(`location ~ /\.(?!well-known/)`)
		r.line("return 404;")
		r.close()
		r.close()
	}
	hasRoot := srv.site != nil
	for _, l := range srv.locs {
		r.line("")
		if l.upstream == "" {
			r.webhookLocation(l)
			continue
		}
		hasRoot = hasRoot || l.path == "/"
		r.open("location %s", r.q(l.field+".path", l.path))
		r.line("proxy_pass http://drover_%s;", l.upstream)
		r.proxyHeaders("$drover_connection")
		r.line("# Skip an instance that refuses or times out (one restarting).")
		r.line("proxy_next_upstream error timeout;")
		r.line("proxy_connect_timeout 5s;")
		r.close()
	}
	if !hasRoot {
		r.line("")
		r.open("location /")
		r.line("return 404;")
		r.close()
	}
	r.close()
}

// revisionHeaders names the revision and node on every answer, when asked.
func (r *renderer) revisionHeaders() {
	if r.p.Revision == "" {
		return
	}
	r.line("add_header X-Drover-Revision %s always;", r.q("revision", r.p.Revision))
	r.line("add_header X-Drover-Node %s always;", r.q("node name", r.p.Node))
}

func (r *renderer) webhookLocation(l location) {
	wh := r.p.Webhook
	r.line("# The push webhook, forwarded to this node's drover agent, which checks")
	r.line("# its signature and tells every node to sync.")
	r.open("location = %s", r.q("webhook.path", l.path))
	r.open("limit_except POST")
	r.line("deny all;")
	r.close()
	r.line("client_max_body_size %s;", WebhookMaxBody)
	host, port, _ := net.SplitHostPort(wh.Upstream)
	r.line("proxy_pass %s;", r.q("webhook.upstream", "http://"+net.JoinHostPort(host, port)))
	r.proxyHeaders(`""`)
	r.close()
}

func (r *renderer) proxyHeaders(connection string) {
	r.line("proxy_http_version 1.1;")
	r.line("proxy_set_header Host $host;")
	r.line("proxy_set_header X-Real-IP $remote_addr;")
	r.line("proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;")
	r.line("proxy_set_header X-Forwarded-Proto $scheme;")
	if connection != `""` {
		r.line("proxy_set_header Upgrade $http_upgrade;")
	}
	r.line("proxy_set_header Connection %s;", connection)
}

// mimeTypes are the types of files static sites are made of; the rest are
// sent as application/octet-stream. Inline, so the file stands alone.
var mimeTypes = []string{
	"text/html html htm",
	"text/css css",
	"text/plain txt",
	"text/xml xml",
	"text/csv csv",
	"text/markdown md",
	"text/calendar ics",
	"application/javascript js mjs",
	"application/json json map",
	"application/manifest+json webmanifest",
	"application/ld+json jsonld",
	"application/rss+xml rss",
	"application/atom+xml atom",
	"application/pdf pdf",
	"application/wasm wasm",
	"application/zip zip",
	"application/gzip gz",
	"image/svg+xml svg svgz",
	"image/png png",
	"image/jpeg jpeg jpg",
	"image/gif gif",
	"image/webp webp",
	"image/avif avif",
	"image/x-icon ico",
	"font/woff woff",
	"font/woff2 woff2",
	"font/ttf ttf",
	"font/otf otf",
	"audio/mpeg mp3",
	"audio/ogg ogg",
	"video/mp4 mp4",
	"video/webm webm",
}

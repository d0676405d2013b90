package spec

import (
	"strings"
	"testing"
	"time"
)

// TestNodeMetricsNotifyHistory: the sections of issue 12 take their
// defaults, resolve urlFile against node.yaml's directory, and every bad
// field is reported at once with its path.
func TestNodeMetricsNotifyHistory(t *testing.T) {
	n, err := ParseNode("node.yaml", []byte(`repo: {url: /srv/repo}
metrics: {listen: 127.0.0.1:9469}
notify:
  webhooks: [{url: https://hooks.example.com/x}, {urlFile: slack.url, format: slack}]
  email: {from: drover@x, to: [ops@x]}
`), "/etc/drover")
	if err != nil {
		t.Fatal(err)
	}
	if n.History.Keep != 500 || n.Metrics.Listen != "127.0.0.1:9469" || n.Notify.Timeout.D() != 5*time.Second ||
		n.Notify.Webhooks[0].Format != "json" || n.Notify.Webhooks[1].URLFile != "/etc/drover/slack.url" || n.Notify.Email.Sendmail != "/usr/sbin/sendmail" {
		t.Errorf("defaults: history %+v metrics %+v notify %+v email %+v", n.History, n.Metrics, n.Notify, n.Notify.Email)
	}
	_, err = ParseNode("node.yaml", []byte(`repo: {url: /srv/repo}
history: {keep: 0}
metrics: {listen: nowhere}
notify:
  webhooks: [{url: ftp://x}, {format: teams}]
  email: {sendmail: sendmail, to: []}
  timeout: 1ms
`), "/")
	if err == nil {
		t.Fatal("bad sections accepted")
	}
	for _, want := range []string{"history.keep", "metrics.listen", "notify.webhooks[0].url", "notify.webhooks[1]: set one of url or urlFile",
		"notify.webhooks[1].format", "notify.email.to", "notify.email.from", "notify.email.sendmail", "notify.timeout"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

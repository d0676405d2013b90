package spec

import (
	"strings"
	"testing"
)

// twoWorkers is base with a second worker right above the first one's
// ports: fine for restart, where only the first ranges are used.
const twoWorkers = base + `  - name: admin
    source: workers/admin
    exec: [node, admin.js]
    port: 3002
    health: {path: /healthz}
`

func TestHandoverDefaultsAndAltPorts(t *testing.T) {
	s, err := Parse("drover.yaml", []byte(twoWorkers))
	if err != nil {
		t.Fatal(err)
	}
	// auto, the default, accepts a default second range that collides
	// (api 3000-3001 defaults to 3002-3003, admin's port): the node
	// restarts instead, and OverlapProblem says why.
	if s.Rollout.Handover != HandoverAuto {
		t.Fatalf("handover %q, want the default auto", s.Rollout.Handover)
	}
	if p := s.OverlapProblem(); !strings.Contains(p, "workers[0] (api): second port range 3002-3003") || !strings.Contains(p, "overlaps the ports 3002-3002 of workers[1].port") {
		t.Fatalf("OverlapProblem() = %q, want the collision of api's default range with admin", p)
	}
	api := s.Workers[0]
	if got := api.AltPorts(); len(got) != 2 || got[0] != 3002 || got[1] != 3003 {
		t.Fatalf("alt ports %v, want [3002 3003] (port + instances)", got)
	}
	alt := api.OnAlt()
	if p := alt.InstancePorts(); p[0] != 3002 || alt.OnAlt().Port != 3000 {
		t.Fatalf("OnAlt ports %v, back %d", p, alt.OnAlt().Port)
	}

	overlap := strings.Replace(twoWorkers, "version: 1\n", "version: 1\nrollout: {handover: overlap}\n", 1)
	overlap = strings.Replace(overlap, "    port: 3002\n", "    port: 3002\n    altPort: 3100\n", 1)
	overlap = strings.Replace(overlap, "    port: 3000\n", "    port: 3000\n    altPort: 3200\n", 1)
	s, err = Parse("drover.yaml", []byte(overlap))
	if err != nil {
		t.Fatalf("overlap with named second ranges: %v", err)
	}
	if s.Rollout.Handover != HandoverOverlap || s.Workers[1].AltPort != 3100 {
		t.Fatalf("decoded %+v, %+v", s.Rollout, s.Workers[1])
	}
	if p := s.OverlapProblem(); p != "" {
		t.Fatalf("OverlapProblem() = %q for free second ranges", p)
	}
}

func TestHandoverBadSpecs(t *testing.T) {
	overlap := strings.Replace(twoWorkers, "version: 1\n", "version: 1\nrollout: {handover: overlap}\n", 1)
	cases := []struct {
		name, yaml string
		want       []string
	}{
		{"unknown kind", strings.Replace(base, "version: 1\n", "version: 1\nrollout: {handover: blue-green}\n", 1),
			[]string{"drover.yaml:2:", "rollout.handover: \"blue-green\" is not auto, overlap or restart"}},
		{"default range hits the next worker", overlap,
			// api 3000-3001 defaults to 3002-3003, admin's port.
			[]string{"drover.yaml:11:", "workers[0].port: second port range 3002-3003 (altPort defaults to port + instances; set altPort to move it) overlaps the ports 3002-3002 of workers[1].port"}},
		{"named range on its own ports", strings.Replace(base, "    port: 3000\n", "    port: 3000\n    altPort: 3001\n", 1),
			[]string{"drover.yaml:11:", "workers[0].altPort: second port range 3001-3002 overlaps the worker's own ports 3000-3001"}},
		{"named range out of bounds", strings.Replace(base, "    port: 3000\n", "    port: 3000\n    altPort: 65535\n", 1),
			[]string{"workers[0].altPort: second port range 65535-65536 is not between 1024 and 65535"}},
		{"two second ranges collide", strings.Replace(strings.Replace(overlap, "    port: 3002\n", "    port: 3010\n    altPort: 3020\n", 1),
			"    port: 3000\n", "    port: 3000\n    altPort: 3019\n", 1),
			[]string{"workers[0].altPort: second port range 3019-3020 overlaps the second port range 3020-3020 of workers[1]"}},
		{"second range on nginx", strings.Replace(base, "    port: 3000\n", "    port: 3000\n    altPort: 8443\n", 1) + "nginx: {httpsPort: 8444}\n",
			[]string{"workers[0].altPort: second port range 8443-8444 includes nginx.httpsPort 8444"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("drover.yaml", []byte(c.yaml))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

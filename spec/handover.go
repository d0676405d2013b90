package spec

import "fmt"

// altProblem is one reason a worker's second port range cannot be used.
type altProblem struct {
	worker int
	named  bool // the spec names workers[worker].altPort
	msg    string
}

// field is where the problem is reported: the altPort line, or the port
// line the default range (Port+Instances) derives from.
func (p altProblem) field() string {
	if p.named {
		return fmt.Sprintf("workers[%d].altPort", p.worker)
	}
	return fmt.Sprintf("workers[%d].port", p.worker)
}

// altRangeProblems checks the workers' second port ranges: one must fit in
// 1024-65535 and not overlap its own first range, any range of another
// worker, or nginx's ports. all checks every worker's range (an overlap
// uses them all); otherwise only those named (a named altPort is checked
// whatever the handover, so a typo shows at once). named tells which
// workers name their altPort.
func altRangeProblems(s *Spec, named func(i int) bool, all bool) []altProblem {
	type use struct {
		worker   int
		from, to int
	}
	var uses []use
	for i := range s.Workers {
		w := &s.Workers[i]
		if w.Port > 0 && w.Instances > 0 {
			uses = append(uses, use{i, w.Port, w.Port + w.Instances - 1})
		}
	}
	checked := func(i int) bool { return all || named(i) }
	var out []altProblem
	for i := range s.Workers {
		w := &s.Workers[i]
		if !checked(i) || w.Instances < 1 || w.Port < 1 {
			continue
		}
		fail := func(format string, args ...any) {
			out = append(out, altProblem{worker: i, named: named(i), msg: fmt.Sprintf(format, args...)})
		}
		from, to := w.AltPort, w.AltPort+w.Instances-1
		what := fmt.Sprintf("second port range %d-%d", from, to)
		if !named(i) {
			what += " (altPort defaults to port + instances; set altPort to move it)"
		}
		if from < 1024 || to > 65535 {
			fail("%s is not between 1024 and 65535", what)
			continue
		}
		if from <= w.Port+w.Instances-1 && w.Port <= to {
			fail("%s overlaps the worker's own ports %d-%d", what, w.Port, w.Port+w.Instances-1)
		}
		for _, u := range uses {
			if u.worker != i && from <= u.to && u.from <= to {
				fail("%s overlaps the ports %d-%d of workers[%d].port", what, u.from, u.to, u.worker)
			}
		}
		for j := i + 1; j < len(s.Workers); j++ {
			o := &s.Workers[j]
			if !checked(j) || o.Instances < 1 || o.AltPort < 1 {
				continue
			}
			if from <= o.AltPort+o.Instances-1 && o.AltPort <= to {
				fail("%s overlaps the second port range %d-%d of workers[%d]", what, o.AltPort, o.AltPort+o.Instances-1, j)
			}
		}
		for _, np := range []struct {
			name string
			port int
		}{{"nginx.httpsPort", s.Nginx.HTTPSPort}, {"nginx.healthPort", s.Nginx.HealthPort}} {
			if from <= np.port && np.port <= to {
				fail("%s includes %s %d", what, np.name, np.port)
			}
		}
	}
	return out
}

// altPorts validates the second port ranges where they are sure to be
// used: every worker's with rollout.handover: overlap, and those the spec
// names. With auto, a default range that collides is not an error: the
// node restarts instead (OverlapProblem says why, in an event).
func (v *validator) altPorts(s *Spec) {
	named := func(i int) bool {
		_, ok := v.pos[fmt.Sprintf("workers[%d].altPort", i)]
		return ok
	}
	for _, p := range altRangeProblems(s, named, s.Rollout.Handover == HandoverOverlap) {
		v.fail(p.field(), "%s", p.msg)
	}
}

// OverlapProblem says why the workers' second port ranges cannot hold an
// overlap handover ("" when they can): the first collision found, naming
// the worker. The agent asks it before choosing overlap for auto.
func (s *Spec) OverlapProblem() string {
	ps := altRangeProblems(s, func(int) bool { return false }, true)
	if len(ps) == 0 {
		return ""
	}
	return fmt.Sprintf("workers[%d] (%s): %s", ps[0].worker, s.Workers[ps[0].worker].Name, ps[0].msg)
}

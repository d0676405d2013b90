package spec

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

// fillAll sets every field of v, however deep, to a value that is not zero
// and differs from its neighbours', so that a field whose yaml tag the
// writer and the reader disagree on cannot come back equal by chance. It
// walks the types rather than naming fields: a field added to Node later
// is covered without touching this test.
func fillAll(t *testing.T, v reflect.Value, path string, seq *int) {
	*seq++
	switch {
	case v.Type() == durationType:
		v.SetInt(int64(time.Duration(*seq) * time.Second))
	case v.Type() == percentType:
		v.SetFloat(float64(*seq) / 100)
	case v.Kind() == reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fillAll(t, v.Elem(), path, seq)
	case v.Kind() == reflect.Struct:
		for i := range v.NumField() {
			fillAll(t, v.Field(i), path+"."+v.Type().Field(i).Name, seq)
		}
	case v.Kind() == reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 2, 2))
		for i := range 2 {
			fillAll(t, v.Index(i), fmt.Sprintf("%s[%d]", path, i), seq)
		}
	case v.Kind() == reflect.Map:
		v.Set(reflect.MakeMap(v.Type()))
		e := reflect.New(v.Type().Elem()).Elem()
		fillAll(t, e, path+"[k]", seq)
		v.SetMapIndex(reflect.ValueOf(fmt.Sprintf("k%d", *seq)), e)
	case v.Kind() == reflect.String:
		v.SetString(fmt.Sprintf("v%d%s", *seq, strings.ToLower(path)))
	case v.Kind() == reflect.Int:
		v.SetInt(int64(*seq))
	case v.Kind() == reflect.Bool:
		v.SetBool(true)
	default:
		t.Fatalf("%s: fillAll cannot fill a %s; teach it", path, v.Type())
	}
}

// TestMarshalNodeRoundTrip: every field of a fully populated Node that
// MarshalNode writes is read back into the same field by the agent's own
// decoder, so the one set of yaml tags serves both sides (drover init
// writes with MarshalNode) and none is dropped by omitempty when set.
func TestMarshalNodeRoundTrip(t *testing.T) {
	var want Node
	seq := 0
	fillAll(t, reflect.ValueOf(&want).Elem(), "", &seq)
	data, err := MarshalNode(&want)
	if err != nil {
		t.Fatal(err)
	}
	var got Node
	if _, errs := decodeFile("node.yaml", data, &got); len(errs) > 0 {
		t.Fatalf("decode what MarshalNode wrote: %v\n%s", errs, data)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("read back differs from what was written:\n got %+v\nwant %+v\n%s", got, want, data)
	}
}

// TestMarshalNodeWritesOnlyWhatIsSet: a Node with just the fields drover
// init sets is written as just those (a zero field, written, would replace
// its default: keepReleases: 0, policy.dataDirs: []), and ParseNode reads
// it back with every other field at its default.
func TestMarshalNodeWritesOnlyWhatIsSet(t *testing.T) {
	n := &Node{Name: "web1", Repo: Repo{URL: "https://git.example.com/x.git", Branch: "main"},
		LB: LB{Driver: "healthcheck", HealthCheck: LBHealthCheck{UnhealthyThreshold: 4}}}
	data, err := MarshalNode(n)
	if err != nil {
		t.Fatal(err)
	}
	const want = `name: web1
repo:
  url: https://git.example.com/x.git
  branch: main
lb:
  driver: healthcheck
  healthcheck:
    unhealthyThreshold: 4
`
	if string(data) != want {
		t.Fatalf("MarshalNode wrote\n%s\nwant\n%s", data, want)
	}
	got, err := ParseNode("node.yaml", data, "/etc/drover")
	if err != nil {
		t.Fatalf("ParseNode of what MarshalNode wrote: %v\n%s", err, data)
	}
	def := defaultNode()
	if got.KeepReleases != def.KeepReleases || got.LB.HealthCheck.Interval != def.LB.HealthCheck.Interval ||
		got.LB.HealthCheck.HealthyThreshold != def.LB.HealthCheck.HealthyThreshold ||
		!reflect.DeepEqual(got.Policy, def.Policy) || got.Guard != def.Guard {
		t.Errorf("a field MarshalNode left out lost its default: %+v", got)
	}
	if got.LB.HealthCheck.UnhealthyThreshold != 4 {
		t.Errorf("lb.healthcheck.unhealthyThreshold = %d, want 4", got.LB.HealthCheck.UnhealthyThreshold)
	}
}

// TestMarshalNodeKeepsAnEmptyBranch: an empty branch is written, so that
// ParseNode refuses it instead of reading the default main.
func TestMarshalNodeKeepsAnEmptyBranch(t *testing.T) {
	data, err := MarshalNode(&Node{Name: "web1", Repo: Repo{URL: "https://git.example.com/x.git"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseNode("node.yaml", data, "/etc/drover"); err == nil || !strings.Contains(err.Error(), "repo.branch") {
		t.Errorf("ParseNode of an empty branch: %v, want an error naming repo.branch\n%s", err, data)
	}
}

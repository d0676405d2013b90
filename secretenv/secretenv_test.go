package secretenv_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/drover-dev/drover/reconcile"
	"github.com/drover-dev/drover/secretenv"
	"github.com/drover-dev/drover/spec"
)

func TestDecryptSaysWhoseFaultItIs(t *testing.T) {
	sp := &spec.Spec{Workers: []spec.Worker{{Name: "web"}, {Name: "api", SecretEnv: "secrets/api.env.age"}}}
	tree := fstest.MapFS{"secrets/api.env.age": {Data: []byte("not age")}}
	noID := filepath.Join(t.TempDir(), "missing.key")
	for _, tc := range []struct {
		name, identity string
		tree           fstest.MapFS
		revision       bool
		want           string
	}{
		{"no identity in node.yaml", "", tree, true, "drover.yaml: workers[1].secretEnv: secrets/api.env.age: this node has no secrets.identityFile in node.yaml to decrypt it"},
		{"identity file unusable", noID, tree, false, "missing.key"},
	} {
		_, err := secretenv.Decrypt(tc.identity, sp, tc.tree)
		if err == nil || reconcile.IsBadRevision(err) != tc.revision || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Decrypt = %v (revision's fault: %v), want %q (revision's fault: %v)", tc.name, err, reconcile.IsBadRevision(err), tc.want, tc.revision)
		}
	}
	envs, err := secretenv.Decrypt("", &spec.Spec{Workers: []spec.Worker{{Name: "web"}}}, fstest.MapFS{})
	if err != nil || len(envs) != 0 {
		t.Errorf("Decrypt of a spec without secretEnv = %v, %v; want none, nil", envs, err)
	}
}

func TestCheckFilesRefusesASecretInClear(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "clear.env"), []byte("API_TOKEN=x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sp := &spec.Spec{Workers: []spec.Worker{{Name: "a", SecretEnv: "clear.env"}, {Name: "b"}, {Name: "c", SecretEnv: "gone.age"}}}
	errs := secretenv.CheckFiles("drover.yaml", dir, sp)
	if len(errs) != 2 ||
		errs[0].Error() != "drover.yaml: workers[0].secretEnv: clear.env is not age-encrypted: encrypt it with drover secrets encrypt, and treat what was committed as leaked" ||
		!strings.HasPrefix(errs[1].Error(), "drover.yaml: workers[2].secretEnv: ") {
		t.Errorf("CheckFiles = %v", errs)
	}
}

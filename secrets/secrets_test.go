package secrets

import (
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"filippo.io/age"

	"github.com/drover-dev/drover/internal/layout"
)

func identityFile(t *testing.T, mode os.FileMode) (string, *age.X25519Identity) {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "node.key")
	if err := os.WriteFile(p, []byte(id.String()+"\n"), mode); err != nil {
		t.Fatal(err)
	}
	os.Chmod(p, mode)
	return p, id
}

func TestEncryptDecryptRoundTripAndWrongNode(t *testing.T) {
	nodeFile, nodeID := identityFile(t, 0o600)
	otherFile, _ := identityFile(t, 0o600)
	clear := "# api\nAPI_TOKEN=tok 'with' \"quotes\" $X\nEMPTY=\n"
	ct, err := Encrypt("api.env", []byte(clear), []age.Recipient{nodeID.Recipient()})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(ct), "tok") || !strings.HasPrefix(string(ct), "-----BEGIN AGE ENCRYPTED FILE-----") {
		t.Fatalf("ciphertext is not armored age, or holds the clear text:\n%s", ct)
	}
	id, err := LoadIdentity(nodeFile)
	if err != nil {
		t.Fatal(err)
	}
	vs, err := id.Decrypt("secrets/api.env.age", ct)
	if err != nil {
		t.Fatal(err)
	}
	want := Vars{{"API_TOKEN", `tok 'with' "quotes" $X`}, {"EMPTY", ""}}
	if len(vs) != 2 || vs[0] != want[0] || vs[1] != want[1] {
		t.Fatalf("decrypted %q, want %q", vs, want)
	}
	other, err := LoadIdentity(otherFile)
	if err != nil {
		t.Fatal(err)
	}
	_, err = other.Decrypt("secrets/api.env.age", ct)
	if err == nil || !strings.Contains(err.Error(), "secrets/api.env.age: does not decrypt") {
		t.Fatalf("a node outside the recipients: %v", err)
	}
}

func TestIdentityReadableByOthersIsRefused(t *testing.T) {
	p, _ := identityFile(t, 0o640)
	_, err := LoadIdentity(p)
	if err == nil || !strings.Contains(err.Error(), "chmod 600 "+p) {
		t.Fatalf("a 0640 identity: %v", err)
	}
}

func TestParseEnvNamesLinesNeverValues(t *testing.T) {
	_, err := ParseEnv("s.env", []byte("GOOD=1\nno equals hunter2\n9BAD=hunter2\nPORT=1\nGOOD=hunter2\n"))
	if err == nil {
		t.Fatal("a bad env file parsed")
	}
	for _, w := range []string{"s.env:2: not KEY=value", `s.env:3: "9BAD"`, "s.env:4: PORT", "s.env:5: GOOD set again (first on line 1)"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error lacks %q:\n%v", w, err)
		}
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Errorf("an error shows a value:\n%v", err)
	}
	vs := Vars{{"A", "1"}, {"B", "x"}}
	if err := vs.CheckAgainst("s.env", map[string]string{"B": "y"}); err == nil || !strings.Contains(err.Error(), "s.env: B is also set in env") {
		t.Errorf("a key colliding with env: %v", err)
	}
}

func TestEnvFileRoundTripAndDiff(t *testing.T) {
	vs := Vars{{"Q", `it's "q" $HOME \ ` + "`x`"}, {"P", `plain $X \n`}}
	p := layout.SecretsEnvFile(t.TempDir(), "api")
	if err := WriteEnvFile(p, vs, -1, -1); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("env file: %v %v", err, fi.Mode())
	}
	got, err := ReadEnvFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != "Q="+vs[0].Value || got[1] != "P="+vs[1].Value {
		t.Fatalf("read back %q", got)
	}
	d := Diff(Vars{{"A", "1"}, {"B", "2"}, {"C", "3"}}, Vars{{"A", "1"}, {"B", "changed"}, {"D", "4"}})
	if strings.Join(d, " ") != "B=<changed> C=<removed> D=<added>" {
		t.Fatalf("Diff = %q", d)
	}
}

// The env file belongs to the worker's user (nobody here), mode 0600, in
// a directory others can traverse but not list.
func TestEnvFileOwnedByTheWorkersUser(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("this test chowns files: run it as root, as the agent runs")
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	p := layout.SecretsEnvFile(t.TempDir(), "api")
	if err := WriteEnvFile(p, Vars{{"K", "v"}}, uid, gid); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if int(st.Uid) != uid || int(st.Gid) != gid || fi.Mode().Perm() != 0o600 {
		t.Errorf("env file owned by %d:%d mode %v, want %d:%d 0600", st.Uid, st.Gid, fi.Mode().Perm(), uid, gid)
	}
	di, _ := os.Stat(filepath.Dir(p))
	if di.Mode().Perm() != 0o711 {
		t.Errorf("secrets dir mode %v, want 0711", di.Mode().Perm())
	}
}

func TestPlaceEnvFileLinksAnUnchangedSecret(t *testing.T) {
	dir := t.TempDir()
	prev, next, other := layout.SecretsEnvFile(filepath.Join(dir, "r1"), "api"), layout.SecretsEnvFile(filepath.Join(dir, "r2"), "api"), layout.SecretsEnvFile(filepath.Join(dir, "r3"), "api")
	vs := Vars{{"K", "v"}}
	if err := PlaceEnvFile(prev, "", vs, -1, -1); err != nil {
		t.Fatal(err)
	}
	if err := PlaceEnvFile(next, prev, vs, -1, -1); err != nil {
		t.Fatal(err)
	}
	if err := PlaceEnvFile(other, prev, Vars{{"K", "changed"}}, -1, -1); err != nil {
		t.Fatal(err)
	}
	ino := func(p string) uint64 {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Sys().(*syscall.Stat_t).Ino
	}
	if ino(next) != ino(prev) {
		t.Error("an unchanged secret was written anew, not linked")
	}
	if ino(other) == ino(prev) {
		t.Error("a changed secret was linked to the old one")
	}
	if env, _ := ReadEnvFile(other); len(env) != 1 || env[0] != "K=changed" {
		t.Errorf("changed secret reads %q", env)
	}
}

// TestEncryptFile: drover secrets encrypt's input, encrypted to the
// recipients file, decrypts with the node's identity; an input larger than
// any env file is refused rather than encrypted.
func TestEncryptFile(t *testing.T) {
	nodeFile, nodeID := identityFile(t, 0o600)
	rcpt := filepath.Join(t.TempDir(), "recipients")
	if err := os.WriteFile(rcpt, []byte("# web1\n"+nodeID.Recipient().String()+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ct, err := EncryptFile("api.env", strings.NewReader("API_TOKEN=tok\n"), rcpt)
	if err != nil {
		t.Fatal(err)
	}
	id, err := LoadIdentity(nodeFile)
	if err != nil {
		t.Fatal(err)
	}
	if vs, err := id.Decrypt("api.env.age", ct); err != nil || len(vs) != 1 || vs[0].Value != "tok" {
		t.Fatalf("decrypted %q, %v", vs, err)
	}
	big := strings.NewReader(strings.Repeat("K=v\n", maxEnvFile/4+1))
	if _, err := EncryptFile("dump.sql", big, rcpt); err == nil || !strings.Contains(err.Error(), "dump.sql: larger than") {
		t.Fatalf("an input over %d bytes: %v", maxEnvFile, err)
	}
}

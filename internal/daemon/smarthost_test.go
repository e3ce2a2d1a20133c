package daemon

import (
	"os"
	"path/filepath"
	"testing"
)

func TestLoadSmarthost(t *testing.T) {
	dir := t.TempDir()
	if sh, err := loadSmarthost(dir); sh != nil || err != nil {
		t.Fatalf("no file: %+v %v", sh, err)
	}
	p := filepath.Join(dir, FileSmarthost)
	os.MkdirAll(filepath.Dir(p), 0o700)
	os.WriteFile(p, []byte(`{"addr": "smtp.provider.example:587", "username": "acme", "password": "pw"}`), 0o644)
	if _, err := loadSmarthost(dir); err == nil {
		t.Fatal("a password readable by others was accepted")
	}
	os.Chmod(p, 0o600)
	sh, err := loadSmarthost(dir)
	if err != nil || sh.Addr != "smtp.provider.example:587" || sh.Username != "acme" {
		t.Fatalf("%+v %v", sh, err)
	}
	os.WriteFile(p, []byte(`{"user": "x"}`), 0o600)
	if _, err := loadSmarthost(dir); err == nil {
		t.Fatal("a file without addr was accepted")
	}
}

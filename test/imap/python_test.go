package imap_test

import (
	"testing"

	"epost/internal/imapserver"
)

// TestPythonClient runs the imaplib checks of testdata/client.py, one
// subtest each, against one server (each check uses its own folders).
func TestPythonClient(t *testing.T) {
	s := startServer(t, imapserver.Config{}, false)
	for _, name := range []string{
		"login_list", "id_before_login", "append_fetch", "store_copy_move_expunge",
		"search", "utf8_headers", "malformed", "idle", "no_condstore", "recent", "big_attachment", "extensions",
	} {
		t.Run(name, func(t *testing.T) { runPython(t, s.addr, name) })
	}
}

package imap_test

import (
	"testing"
)

// TestPythonClient runs the same imaplib checks against the node's own engine (internal/imapserver,
// the default). Two do not apply: "no_condstore" checks that CONDSTORE is refused, which
// imapserver offers; "malformed" APPENDs a message holding a NUL byte in a plain literal, which RFC
// 9051 forbids (CHAR8 excludes NUL; literal8 carries it) and imapserver refuses with BAD where the
// go-imap engine took it.
func TestPythonClient(t *testing.T) {
	addr := startOwnEngine(t)
	for _, name := range []string{
		"login_list", "id_before_login", "append_fetch", "store_copy_move_expunge",
		"search", "utf8_headers", "idle", "recent", "big_attachment", "extensions",
		"condstore_resync", "qresync_reconnect", "sort_thread",
	} {
		t.Run(name, func(t *testing.T) { runPython(t, addr, name) })
	}
}

package imapserver

import (
	"log/slog"
	"strconv"
	"strings"
	"testing"

	"epost/internal/mailbox"
)

func appendCmd(mbox, msg string) string {
	return "APPEND " + mbox + " {" + strconv.Itoa(len(msg)) + "+}\r\n" + msg
}

// TestQuota: RFC 9208 GETQUOTAROOT, GETQUOTA, SETQUOTA refused, STATUS DELETED-STORAGE and
// NO [OVERQUOTA] for APPEND and COPY.
func TestQuota(t *testing.T) {
	var users mailbox.MemoryUsers
	users.Add("u", "p")
	srv, _ := New(Config{Auth: &users, Logger: slog.New(slog.DiscardHandler), StorageQuota: 4096, MessageQuota: 3})
	c := pipeSession(t, srv)
	big := "Subject: big\r\n\r\n" + strings.Repeat("x", 2000) + "\r\n"
	small := "Subject: s\r\n\r\nhi\r\n"
	for _, step := range []struct{ cmd, want string }{
		{"LOGIN u p", "QUOTA=RES-STORAGE QUOTA=RES-MESSAGE"},
		{"CAPABILITY", " QUOTA "},
		{"GETQUOTAROOT inbox", "* QUOTAROOT INBOX \"\"\r\n* QUOTA \"\" (STORAGE 0 4 MESSAGE 0 3)\r\n"},
		{"GETQUOTAROOT nosuch/box", "* QUOTAROOT nosuch/box \"\"\r\n"},
		{appendCmd("INBOX", big), "OK [APPENDUID"},
		{"GETQUOTA \"\"", "* QUOTA \"\" (STORAGE 2 4 MESSAGE 1 3)\r\n"},
		{"GETQUOTA other", "NO "},
		{"SETQUOTA \"\" (STORAGE 100)", "NO [NOPERM]"},
		{appendCmd("INBOX", big), "OK [APPENDUID"},
		{appendCmd("INBOX", big), "NO [OVERQUOTA]"},
		{appendCmd("Sent", small), "OK [APPENDUID"},
		{appendCmd("Sent", small), "NO [OVERQUOTA]"},
		{"SELECT INBOX", "* 2 EXISTS"},
		{"COPY 1 Trash", "NO [OVERQUOTA]"},
		{"MOVE 1 Trash", "OK"},
		{"STATUS Trash (MESSAGES DELETED DELETED-STORAGE)", "* STATUS Trash (MESSAGES 1 DELETED 0 DELETED-STORAGE 0)"},
		{"SELECT Trash", "* 1 EXISTS"},
		{"STORE 1 +FLAGS.SILENT (\\Deleted)", "OK"},
		{"STATUS Trash (DELETED DELETED-STORAGE)", "* STATUS Trash (DELETED 1 DELETED-STORAGE 2)"},
		{"EXPUNGE", "OK"},
		{"GETQUOTAROOT INBOX", "(STORAGE 2 4 MESSAGE 2 3)"},
	} {
		if out := c(step.cmd); !strings.Contains(out, step.want) {
			t.Fatalf("%q: want %q in\n%s", step.cmd, step.want, out)
		}
	}
}

// TestQuotaUnlimited: with no limits there is no quota root (RFC 9208 section 4.2.2: a
// QUOTAROOT without roots) and nothing is refused.
func TestQuotaUnlimited(t *testing.T) {
	var users mailbox.MemoryUsers
	users.Add("u", "p")
	srv, _ := New(Config{Auth: &users, Logger: slog.New(slog.DiscardHandler), StorageQuota: -1, MessageQuota: -1})
	c := pipeSession(t, srv)
	c("LOGIN u p")
	if out := c("GETQUOTAROOT INBOX"); !strings.HasPrefix(out, "* QUOTAROOT INBOX\r\n") || strings.Contains(out, "* QUOTA ") {
		t.Fatalf("GETQUOTAROOT without limits:\n%s", out)
	}
	if out := c("GETQUOTA \"\""); !strings.Contains(out, " NO ") {
		t.Fatalf("GETQUOTA without limits:\n%s", out)
	}
	if out := c("CAPABILITY"); strings.Contains(out, "QUOTA=RES") || !strings.Contains(out, " QUOTA") {
		t.Fatalf("capabilities:\n%s", out)
	}
}

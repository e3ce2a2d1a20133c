package mailclients_test

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPythonSMTP runs the smtplib checks, each against its own servers.
func TestPythonSMTP(t *testing.T) {
	for _, name := range []string{
		"smtp_auth", "smtp_auth_required", "smtp_from_mismatch", "smtp_unknown_rcpt",
		"smtp_size", "smtp_starttls", "smtp_pipelining", "utf8_headers", "malformed_mime",
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			newHarness(t).runPython(t, name, nil)
		})
	}
}

// TestPythonOutside: a recipient outside the ring lands in the outbox,
// byte-exact with the ring copy, and the ring recipient gets the message.
func TestPythonOutside(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	tmp := t.TempDir()
	h.runPython(t, "smtp_outside", map[string]any{"tmp": tmp})
	sent, err := os.ReadFile(filepath.Join(tmp, "sent.eml"))
	if err != nil {
		t.Fatal(err)
	}
	ids, err := h.outbox.Pending()
	if err != nil || len(ids) != 1 {
		t.Fatalf("outbox: %v %v", ids, err)
	}
	env, r, err := h.outbox.Open(ids[0])
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got, _ := io.ReadAll(r)
	if env.From != alice || len(env.To) != 1 || env.To[0] != "carol@elsewhere.net" {
		t.Errorf("outbox envelope %+v", env)
	}
	if !bytes.HasSuffix(got, sent) || !bytes.HasPrefix(got, []byte("Received: ")) {
		t.Errorf("outbox message differs from what was sent")
	}
	ring := h.messages(bob)
	if len(ring) != 1 || !bytes.Equal(ring[0], got) {
		t.Errorf("ring copy and outbox copy differ")
	}
	if len(h.sub.envs) != 1 || len(h.sub.envs[0].To) != 1 || h.sub.envs[0].To[0] != bob {
		t.Errorf("submitter envelopes %+v: outside recipients must not reach the ring", h.sub.envs)
	}
}

// TestPythonBigAttachment sends a 20 MB attachment with smtplib and reads
// it back with poplib, byte for byte.
func TestPythonBigAttachment(t *testing.T) {
	t.Parallel()
	newHarness(t).runPython(t, "big_attachment", nil)
}

// seedThree puts three messages into bob's INBOX; the first has lines
// starting with "." for byte-stuffing.
func seedThree(h *harness) {
	h.seed(bob,
		"From: a@example.org\r\nSubject: one\r\n\r\nline 1\r\n.line 2\r\nline 3\r\nline 4\r\n",
		"From: b@example.org\r\nSubject: two\r\n\r\nbody two\r\n",
		"From: c@example.org\r\nSubject: three\r\n\r\nbody three\r\n")
}

// TestPythonPOP3 runs the poplib checks, each against its own servers and
// a freshly seeded INBOX.
func TestPythonPOP3(t *testing.T) {
	for _, name := range []string{"pop_auth", "pop_dele_quit", "pop_rset", "pop_top", "pop_uidl_stable", "pop_stls"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			seedThree(h)
			h.runPython(t, name, nil)
			if name == "pop_dele_quit" {
				msgs := h.messages(bob)
				if len(msgs) != 2 || !strings.Contains(string(msgs[1]), "Subject: three") {
					t.Errorf("INBOX after DELE 2 + QUIT: %q", msgs)
				}
			}
		})
	}
}

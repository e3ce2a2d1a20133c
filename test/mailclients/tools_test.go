package mailclients_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"math/rand"
	"mime"
	"mime/multipart"
	"net"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// needTool skips the test when a client program is missing.
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not installed; .ci/run installs it (apt-get install -y swaks mutt)", name)
	}
	return p
}

func run(t *testing.T, dir string, env []string, stdin io.Reader, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir, cmd.Stdin = dir, stdin
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// attachmentOf returns the decoded body of the part named filename.
func attachmentOf(t *testing.T, raw []byte, filename string) []byte {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("parse message: %v", err)
	}
	_, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil {
		t.Fatalf("Content-Type: %v", err)
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		p, err := mr.NextPart()
		if err != nil {
			t.Fatalf("no part named %s: %v", filename, err)
		}
		if p.FileName() != filename {
			continue
		}
		// multipart.Part undoes quoted-printable only; base64 is ours.
		b, err := io.ReadAll(base64.NewDecoder(base64.StdEncoding, p))
		if err != nil {
			t.Fatalf("decode %s: %v", filename, err)
		}
		return b
	}
}

func randomFile(t *testing.T, dir, name string, n int, seed int64) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSwaks sends a message with an attachment with swaks, over STARTTLS
// with AUTH PLAIN, and checks what reached bob's INBOX; then a wrong
// password and a forged sender.
func TestSwaks(t *testing.T) {
	swaks := needTool(t, "swaks")
	t.Parallel()
	h := newHarness(t)
	dir := t.TempDir()
	att := randomFile(t, dir, "report.bin", 300<<10, 1)
	host, port, _ := net.SplitHostPort(h.SMTP)
	base := []string{"--server", host, "--port", port, "--ehlo", "client.example",
		"--auth", "PLAIN", "--auth-user", alice, "--to", bob}
	out := run(t, dir, nil, nil, swaks, append(base, "--tls", "--auth-password", password, "--from", alice,
		"--header", "Subject: swaks attachment", "--body", "See the report.",
		"--attach-type", "application/octet-stream", "--attach-name", "report.bin", "--attach", "@report.bin")...)
	for _, want := range []string{"STARTTLS", "TLS started", "235 2.0.0", "250 2.0.0"} {
		if !strings.Contains(out, want) {
			t.Errorf("swaks transcript lacks %q", want)
		}
	}
	msgs := h.messages(bob)
	if len(msgs) != 1 {
		t.Fatalf("bob has %d messages", len(msgs))
	}
	if !bytes.HasPrefix(msgs[0], []byte("Received: from client.example ([127.0.0.1])\r\n\tby node.example.org (epost) with ESMTPSA")) {
		t.Errorf("trace field: %q", msgs[0][:120])
	}
	if got := attachmentOf(t, msgs[0], "report.bin"); !bytes.Equal(got, att) {
		t.Errorf("attachment differs: %d bytes, want %d", len(got), len(att))
	}

	// Failures: swaks exits non-zero, so look at the transcript.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--tls", "--auth-password", "wrong", "--from", alice}, "535 5.7.8"},
		{[]string{"--tls", "--auth-password", password, "--from", bob}, "553 5.7.1"},
	} {
		cmd := exec.Command(swaks, append(base, tc.args...)...)
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("swaks %v: err %v, want %q in\n%s", tc.args, err, tc.want, out)
		}
	}
	if n := len(h.messages(bob)); n != 1 {
		t.Errorf("bob has %d messages after refused submissions", n)
	}
}

// TestMutt sends with mutt through smtp_url (STARTTLS, AUTH) and reads the
// message back with mutt over POP3 (STLS). Mutt needs a terminal even in
// batch use, so the reading run goes through script(1) with commands
// pushed by a folder-hook; it pipes the message to a file.
func TestMutt(t *testing.T) {
	mutt := needTool(t, "mutt")
	scriptBin := needTool(t, "script")
	t.Parallel()
	h := newHarness(t)
	dir := t.TempDir()
	att := randomFile(t, dir, "photo.bin", 200<<10, 2)
	if err := os.WriteFile(filepath.Join(dir, "cert.pem"), h.certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	user := strings.Replace(bob, "@", "%40", 1)
	sender := strings.Replace(alice, "@", "%40", 1)
	got := filepath.Join(dir, "got.eml")
	muttrc := `set from="` + alice + `"
set realname="Alice"
set use_from=yes
set smtp_url="smtp://` + sender + `@` + h.SMTP + `/"
set smtp_pass="` + password + `"
set pop_pass="` + password + `"
set ssl_starttls=yes
set ssl_force_tls=yes
set ssl_verify_host=no
set certificate_file="` + filepath.Join(dir, "cert.pem") + `"
set folder="` + dir + `"
set spoolfile=""
set mbox="` + filepath.Join(dir, "mbox") + `"
set move=no
set record=""
set copy=no
set header_cache=""
set message_cachedir=""
set mail_check=0
set wait_key=no
folder-hook . 'push "<limit>~s photo<enter><pipe-message>cat > ` + got + `<enter><quit>"'
`
	rc := filepath.Join(dir, "muttrc")
	if err := os.WriteFile(rc, []byte(muttrc), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"HOME=" + dir, "TERM=vt100", "MUTT_NO_INIT=1"}
	run(t, dir, env, strings.NewReader("A photo for you.\n"), mutt,
		"-n", "-F", rc, "-s", "photo", "-a", "photo.bin", "--", bob)

	msgs := h.messages(bob)
	if len(msgs) != 1 {
		t.Fatalf("bob has %d messages after mutt sent one", len(msgs))
	}
	if !bytes.Contains(msgs[0][:200], []byte("with ESMTPSA")) {
		t.Errorf("mutt did not use STARTTLS and AUTH: %q", msgs[0][:200])
	}
	if b := attachmentOf(t, msgs[0], "photo.bin"); !bytes.Equal(b, att) {
		t.Errorf("attachment as stored differs")
	}

	run(t, dir, env, nil, scriptBin, "-qec",
		mutt+" -n -F "+rc+" -f pop://"+user+"@"+h.POP3+"/", "/dev/null")
	read, err := os.ReadFile(got)
	if err != nil {
		t.Fatalf("mutt did not pipe the message read over POP3: %v", err)
	}
	// Mutt stores messages with local (LF) line ends.
	want := bytes.ReplaceAll(msgs[0], []byte("\r\n"), []byte("\n"))
	if !bytes.Equal(read, want) {
		t.Errorf("message read by mutt over POP3 differs from the stored one (%d vs %d bytes)", len(read), len(want))
	}
	if n := len(h.messages(bob)); n != 1 {
		t.Errorf("mutt's POP3 session changed the INBOX: %d messages", n)
	}
}

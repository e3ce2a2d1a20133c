package mailstore

import (
	"bytes"
	"os"
	"testing"

	"epost/internal/mailbox"
)

// goldenMessage exercises every field of the structure encoding: groups, multipart extension
// data, dispositions with parameters, languages, locations, text line counts and an attached
// message/rfc822 with its own envelope and body.
const goldenMessage = "Date: Mon, 02 Jan 2006 15:04:05 -0700\r\n" +
	"Subject: =?utf-8?q?caf=C3=A9?= report\r\n" +
	"From: \"Ann Example\" <ann@example.org>\r\n" +
	"Sender: bot@example.org\r\n" +
	"Reply-To: replies@example.org\r\n" +
	"To: team: bob@example.com, carol@example.net;, dave@example.com\r\n" +
	"Cc: eve@example.org\r\n" +
	"In-Reply-To: <parent@example.org>\r\n" +
	"Message-ID: <golden@example.org>\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: multipart/mixed; boundary=\"outer\"\r\n" +
	"Content-Disposition: inline\r\n" +
	"Content-Language: en, fr\r\n" +
	"Content-Location: http://example.org/msg\r\n" +
	"\r\n" +
	"--outer\r\n" +
	"Content-Type: text/plain; charset=utf-8; format=flowed\r\n" +
	"Content-ID: <part1@example.org>\r\n" +
	"Content-Description: the text\r\n" +
	"Content-Transfer-Encoding: quoted-printable\r\n" +
	"Content-Language: en\r\n" +
	"\r\n" +
	"line one\r\nline two\r\n" +
	"--outer\r\n" +
	"Content-Type: image/png; name=\"x.png\"\r\n" +
	"Content-Disposition: attachment; filename=\"x.png\"; size=12\r\n" +
	"Content-Transfer-Encoding: base64\r\n" +
	"Content-Location: x.png\r\n" +
	"\r\n" +
	"iVBORw0KGgo=\r\n" +
	"--outer\r\n" +
	"Content-Type: message/rfc822\r\n" +
	"\r\n" +
	"Subject: inner\r\n" +
	"From: frank@example.com\r\n" +
	"To: grace@example.com\r\n" +
	"Content-Type: multipart/alternative; boundary=\"inner\"\r\n" +
	"\r\n" +
	"--inner\r\n" +
	"Content-Type: text/plain\r\n" +
	"\r\n" +
	"plain\r\n" +
	"--inner\r\n" +
	"Content-Type: text/html\r\n" +
	"\r\n" +
	"<p>html</p>\r\n" +
	"--inner--\r\n" +
	"--outer--\r\n"

// TestStructureDecodesOldEncoding: testdata/structure-v1.json was written by the build that
// still used go-imap v2's types for the parse cache (commit 0e1929a). Caches and folder logs
// hold that encoding, so the mailbox types must decode it into the same tree and encode it to
// the same bytes, and parsing the message today must still give those bytes.
func TestStructureDecodesOldEncoding(t *testing.T) {
	old, err := os.ReadFile("testdata/structure-v1.json")
	if err != nil {
		t.Fatal(err)
	}
	old = bytes.TrimSuffix(old, []byte("\n"))
	s, err := decodeStructure(old)
	if err != nil {
		t.Fatal(err)
	}
	if again := encodeStructure(s); !bytes.Equal(again, old) {
		t.Errorf("re-encoding changed the bytes:\nold %s\nnew %s", old, again)
	}
	if now := encodeStructure(mailbox.Parse([]byte(goldenMessage))); !bytes.Equal(now, old) {
		t.Errorf("parsing today encodes differently:\nold %s\nnew %s", old, now)
	}
	mp, ok := s.BodyStructure.(*mailbox.MultiPart)
	if !ok || len(mp.Children) != 3 || mp.Extended == nil || mp.Extended.Location != "http://example.org/msg" {
		t.Fatalf("outer multipart: %#v", s.BodyStructure)
	}
	img := mp.Children[1].(*mailbox.SinglePart)
	if img.Filename() != "x.png" || img.Extended.Disposition.Params["size"] != "12" {
		t.Errorf("attachment: %#v", img)
	}
	inner := mp.Children[2].(*mailbox.SinglePart).MessageRFC822
	if inner == nil || inner.Envelope.Subject != "inner" || len(inner.BodyStructure.(*mailbox.MultiPart).Children) != 2 {
		t.Errorf("attached message: %#v", inner)
	}
	if to := s.Envelope.To; len(to) != 5 || to[0].Mailbox != "team" || to[0].Host != "" || to[1].Addr() != "bob@example.com" {
		t.Errorf("envelope To: %#v", to)
	}
}

// TestWriteGolden rewrites testdata/structure-v1.json (EPOST_WRITE_GOLDEN=1); only when the
// encoding changes on purpose, with a version bump.
func TestWriteGolden(t *testing.T) {
	if os.Getenv("EPOST_WRITE_GOLDEN") == "" {
		t.Skip("set EPOST_WRITE_GOLDEN=1 to rewrite testdata/structure-v1.json")
	}
	b := encodeStructure(mailbox.Parse([]byte(goldenMessage)))
	if err := os.WriteFile("testdata/structure-v1.json", append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}

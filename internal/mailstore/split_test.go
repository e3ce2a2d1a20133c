package mailstore

import (
	"bytes"
	"strings"
	"testing"

	"epost/internal/mailbox"
)

func TestSplitMessage(t *testing.T) {
	att := strings.Repeat("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=\r\n", 100) // 3.8 KB body
	tests := []struct {
		name     string
		raw      string
		pieces   int
		isolated string // a piece that must stand alone
	}{
		{"plain", "Subject: x\r\n\r\nhello\r\n", 1, ""},
		{"header only", "Subject: x", 1, ""},
		{"small parts stay together", "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\none\r\n--b\r\n\r\ntwo\r\n--b--\r\n", 1, ""},
		{"attachment cut out", "Content-Type: multipart/mixed; boundary=b\r\n\r\npre\r\n--b\r\n\r\ntext\r\n--b\r\nContent-Type: application/pdf\r\n\r\n" + att + "\r\n--b--\r\nepilogue", 3, att},
		{"LF line ends and padding", "Content-Type: multipart/mixed; boundary=b\n\n--b  \n\n" + att + "\n--b-- \n", 3, att},
		{"nested", "Content-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\nContent-Type: multipart/alternative; boundary=i\r\n\r\n--i\r\n\r\nx\r\n--i\r\n\r\n" + att + "\r\n--i--\r\n--o--\r\n", 3, att},
		{"boundary prefix is not a delimiter", "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n" + att + "--bb\r\n" + att + "\r\n--b--\r\n", 3, att + "--bb\r\n" + att},
		{"no close delimiter: whole", "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n" + att, 1, ""},
		{"no boundary parameter: whole", "Content-Type: multipart/mixed\r\n\r\n" + att, 1, ""},
		{"single part body", "Content-Type: application/octet-stream\r\n\r\n" + att, 2, att},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pieces := splitMessage([]byte(tc.raw))
			if got := bytes.Join(pieces, nil); string(got) != tc.raw {
				t.Fatalf("pieces do not reassemble the message")
			}
			if len(pieces) != tc.pieces {
				t.Fatalf("%d pieces, want %d: %q", len(pieces), tc.pieces, pieces)
			}
			if tc.isolated != "" {
				found := false
				for _, p := range pieces {
					found = found || string(p) == tc.isolated
				}
				if !found {
					t.Fatalf("attachment body not a piece of its own")
				}
			}
		})
	}
}

func FuzzSplitMessage(f *testing.F) {
	f.Add([]byte("Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n" + strings.Repeat("x", 2000) + "\r\n--b--\r\n"))
	f.Add([]byte("Subject: x\n\n\x00\xff"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		pieces := splitMessage(raw)
		if !bytes.Equal(bytes.Join(pieces, nil), raw) {
			t.Fatal("pieces do not reassemble the message")
		}
		if len(pieces) > 2*maxSplitParts+1 {
			t.Fatalf("%d pieces", len(pieces))
		}
		for _, p := range pieces {
			if len(p) == 0 {
				t.Fatal("empty piece")
			}
		}
	})
}

func TestStructureRoundTrip(t *testing.T) {
	raw := []byte("From: \"A\" <a@x.example>\r\nTo: b@y.example\r\nSubject: =?utf-8?q?h=C3=A9?=\r\nDate: Mon, 2 Jan 2006 15:04:05 +0200\r\n" +
		"Content-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\nContent-Type: text/plain\r\n\r\nhi\r\n--o\r\nContent-Type: message/rfc822\r\n\r\n" +
		"Subject: inner\r\n\r\nbody\r\n--o--\r\n")
	s := mailbox.Parse(raw)
	enc := encodeStructure(s)
	back, err := decodeStructure(enc)
	if err != nil {
		t.Fatal(err)
	}
	if again := encodeStructure(back); !bytes.Equal(again, enc) {
		t.Fatalf("round trip differs:\n%s\n%s", enc, again)
	}
	if !back.Envelope.Date.Equal(s.Envelope.Date) || back.HeaderSize != s.HeaderSize {
		t.Fatalf("envelope %+v", back.Envelope)
	}
}

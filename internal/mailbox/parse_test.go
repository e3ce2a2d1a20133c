package mailbox

import (
	"testing"
)

func TestHeaderSize(t *testing.T) {
	tests := []struct {
		raw  string
		want int64
	}{
		{"", 0},
		{"\r\nbody", 2},
		{"\nbody", 1},
		{"A: b\r\n\r\nbody", 8},
		{"A: b\n\nbody", 6},
		{"A: b\r\nC: d\r\n", 12},
		{"no separator", 12},
		{"A: b\r\n\nmixed", 7},
	}
	for _, tc := range tests {
		if got := HeaderSize([]byte(tc.raw)); got != tc.want {
			t.Errorf("HeaderSize(%q) = %d, want %d", tc.raw, got, tc.want)
		}
	}
}

func TestParseStructure(t *testing.T) {
	raw := "From: =?utf-8?q?J=C3=BCrgen?= <j@example.de>\r\n" +
		"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n" +
		"Content-Type: multipart/mixed; boundary=o\r\n\r\n" +
		"--o\r\nContent-Type: multipart/alternative; boundary=a\r\n\r\n" +
		"--a\r\nContent-Type: text/plain\r\n\r\nhi\r\n--a\r\nContent-Type: text/html\r\n\r\n<p>hi</p>\r\n--a--\r\n" +
		"--o\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner body\r\n" +
		"--o\r\nContent-Type: image/png\r\nContent-Disposition: attachment; filename=x.png\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n--o--\r\n"
	s := Parse([]byte(raw))
	if s.Envelope.Subject != "=?utf-8?q?Gr=C3=BC=C3=9Fe?=" {
		t.Errorf("subject kept raw: %q", s.Envelope.Subject)
	}
	if len(s.Envelope.From) != 1 || s.Envelope.From[0].Host != "example.de" || len(s.Envelope.Sender) != 1 {
		t.Errorf("from/sender %+v %+v", s.Envelope.From, s.Envelope.Sender)
	}
	mp, ok := s.BodyStructure.(*MultiPart)
	if !ok || mp.Subtype != "mixed" || len(mp.Children) != 3 {
		t.Fatalf("top %#v", s.BodyStructure)
	}
	if alt, ok := mp.Children[0].(*MultiPart); !ok || len(alt.Children) != 2 {
		t.Errorf("alternative %#v", mp.Children[0])
	}
	rfc, ok := mp.Children[1].(*SinglePart)
	if !ok || rfc.MessageRFC822 == nil || rfc.MessageRFC822.Envelope.Subject != "inner" {
		t.Errorf("message/rfc822 %#v", mp.Children[1])
	}
	img := mp.Children[2].(*SinglePart)
	if img.Filename() != "x.png" || img.Encoding != "base64" || img.Size != 12 {
		t.Errorf("attachment %+v", img)
	}
}

func TestParseMalformed(t *testing.T) {
	for _, raw := range []string{
		"", "\r\n", "garbage", "Content-Type: multipart/mixed\r\n\r\nno boundary",
		"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n", "Content-Type: message/rfc822\r\n\r\n",
		"Content-Type: ;;;\r\nFrom: <<>>\r\nDate: never\r\n\r\n\xff",
	} {
		s := Parse([]byte(raw))
		if s == nil || s.Envelope == nil || s.BodyStructure == nil {
			t.Errorf("Parse(%q) = %+v", raw, s)
		}
	}
}

// FuzzParse: any bytes a client appends are stored; parsing them must not
// panic (Parse recovers, but the fuzzer also checks that nothing needs to)
// and must yield a usable structure.
func FuzzParse(f *testing.F) {
	f.Add([]byte("Subject: x\r\n\r\nbody"))
	f.Add([]byte("Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nContent-Type: multipart/digest; boundary=c\r\n\r\n--c\r\n\r\nx\r\n--c--\r\n--b--\r\n"))
	f.Add([]byte("From: =?utf-8?b?w7w=?= <a@b>\nTo: undisclosed-recipients:;\n\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		hs := HeaderSize(raw)
		if hs < 0 || hs > int64(len(raw)) {
			t.Fatalf("HeaderSize %d of %d", hs, len(raw))
		}
		s := Parse(raw)
		if s == nil || s.Envelope == nil || s.BodyStructure == nil || s.HeaderSize != hs {
			t.Fatalf("Parse: %+v", s)
		}
	})
}

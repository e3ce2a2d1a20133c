package imapwire

import (
	"testing"
	"unicode/utf8"
)

func TestMailboxUTF7(t *testing.T) {
	// Examples from RFC 3501 section 5.1.3 and RFC 2152.
	cases := []struct{ utf8, utf7 string }{
		{"INBOX", "INBOX"},
		{"~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"},
		{"&", "&-"},
		{"Tom & Jerry", "Tom &- Jerry"},
		{"Entwürfe", "Entw&APw-rfe"},
		{"Gelöschte Elemente", "Gel&APY-schte Elemente"},
		{"😀", "&2D3eAA-"},
		{"a\x01b", "a&AAE-b"},
	}
	for _, c := range cases {
		if got := EncodeMailboxUTF7(c.utf8); got != c.utf7 {
			t.Errorf("encode %q: got %q, want %q", c.utf8, got, c.utf7)
		}
		got, err := DecodeMailboxUTF7(c.utf7)
		if err != nil || got != c.utf8 {
			t.Errorf("decode %q: got %q, %v; want %q", c.utf7, got, err, c.utf8)
		}
	}
	bad := []string{
		"&",               // unterminated
		"&U,BTFw",         // no closing -
		"&AGE",            // unterminated
		"&AEE-",           // printable ASCII "A" encoded
		"&2D0-",           // lone high surrogate
		"&3gA-",           // lone low surrogate
		"&APx-",           // non-zero padding bits
		"&A-",             // too short for one unit
		"Entw\xc3\xbcrfe", // raw 8-bit
		"a\tb",            // control character
		"&AP*-",           // character outside the alphabet
		"&APw/-",          // '/' is not in modified base64
	}
	for _, s := range bad {
		if got, err := DecodeMailboxUTF7(s); err == nil {
			t.Errorf("decode %q: got %q, want error", s, got)
		}
	}
}

func FuzzMailboxUTF7(f *testing.F) {
	for _, s := range []string{"INBOX", "&-", "Entw&APw-rfe", "&2D3eAA-", "&U,BTFw-/&ZeVnLIqe-", "&", "&AEE-", "台北", "a&b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		// Whatever arrives, decoding must not panic, and a decoded name encodes to a string
		// that decodes to the same name.
		if dec, err := DecodeMailboxUTF7(s); err == nil {
			again, err := DecodeMailboxUTF7(EncodeMailboxUTF7(dec))
			if err != nil || again != dec {
				t.Fatalf("%q decodes to %q, re-encoded decodes to %q, %v", s, dec, again, err)
			}
		}
		if utf8.ValidString(s) {
			enc := EncodeMailboxUTF7(s)
			dec, err := DecodeMailboxUTF7(enc)
			if err != nil || dec != s {
				t.Fatalf("%q encodes to %q, which decodes to %q, %v", s, enc, dec, err)
			}
		}
	})
}

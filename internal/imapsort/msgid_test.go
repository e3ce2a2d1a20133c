package imapsort

import (
	"slices"
	"testing"
)

func TestMsgIDs(t *testing.T) {
	tests := []struct {
		in    string
		first bool
		want  []string
	}{
		{"", false, nil},
		{"<a@b>", false, []string{"a@b"}},
		{"  <a@b.example>  ", false, []string{"a@b.example"}},
		{"<a@b> <c@d>\r\n\t<e@f>", false, []string{"a@b", "c@d", "e@f"}},
		{"<a@b> <c@d>", true, []string{"a@b"}},
		// RFC 5256 section 3: quoting does not make a different Message ID.
		{`<"01KF8JCEOCBS0045PS"@xxx.yyy.com>`, false, []string{"01KF8JCEOCBS0045PS@xxx.yyy.com"}},
		{`<"a\"b"@c>`, false, []string{`a"b@c`}},
		{`<"a>b"@c>`, false, []string{"a>b@c"}}, // '>' quoted is part of the ID
		// Obsolete syntax: CFWS inside the brackets.
		{"<a . b @ c (comment) >", false, []string{"a.b@c"}},
		// Case is kept: comparisons are case-sensitive.
		{"<ABC@Example.COM>", false, []string{"ABC@Example.COM"}},
		// Not Message IDs.
		{"a@b", false, nil},
		{"<>", false, nil},
		{"<ab>", false, nil},
		{"<@b>", false, nil},
		{"<a@>", false, nil},
		{"<a@b", false, nil},
		{"<a@b> <c@d", false, []string{"a@b"}},
		{"<<a@b>", false, []string{"a@b"}},
		// Comments and phrases outside brackets are skipped, angle brackets and all.
		{"(see <x@y>) <a@b>", false, []string{"a@b"}},
		{`"Joe <x@y>" <a@b>`, false, []string{"a@b"}},
		{"Your message of Tue, 1 Jan 2008 <a@b>", true, []string{"a@b"}},
		{"<ab> <a@b>", true, []string{"a@b"}}, // the first valid one
		{"(unterminated <a@b>", false, nil},
	}
	for _, tc := range tests {
		got := msgIDs(nil, tc.in, tc.first)
		if !slices.Equal(got, tc.want) {
			t.Errorf("msgIDs(%q, %v) = %q, want %q", tc.in, tc.first, got, tc.want)
		}
	}
}

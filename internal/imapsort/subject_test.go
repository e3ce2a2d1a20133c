package imapsort

import "testing"

func TestBaseSubject(t *testing.T) {
	tests := []struct {
		in    string
		base  string
		reply bool
	}{
		{"", "", false},
		{"Hello", "Hello", false},
		{"Re: Hello", "Hello", true},
		{"RE: hello", "hello", true},
		{"rE:hello", "hello", true},
		{"Re: Re: Re: Hello", "Hello", true},
		{"Fwd: Hello", "Hello", true},
		{"Fw: Hello", "Hello", true},
		{"FWD:Hello", "Hello", true},
		{"Fwd:Fw:Re:x", "x", true},
		{"Re : Hello", "Hello", true},    // *WSP before ":"
		{"Re [2]: Hello", "Hello", true}, // subj-refwd with a blob
		{"Re[2]: Hello", "Hello", true},  //
		{"Re: Re[5]: [list] Fwd: subj (fwd)", "subj", true},
		{"[list] Re: Hello", "Hello", true},       // *subj-blob subj-refwd is one leader
		{"Re: [list] Hello", "Hello", true},       // a blob before a non-empty base goes (step 4)
		{"[PATCH] Hello", "Hello", false},         // removing a blob alone is no reply
		{"[a][b] Hello", "Hello", false},          //
		{"[PATCH]", "[PATCH]", false},             // a blob is kept when nothing would be left
		{"[a] [b]", "[b]", false},                 // the last blob is the subj-base
		{"Re: [PATCH]", "[PATCH]", true},          //
		{"[a[b] c", "[a[b] c", false},             // '[' is no BLOBCHAR: not a blob
		{"[] x", "x", false},                      // an empty blob is a blob
		{"Hello (fwd)", "Hello", true},            // subj-trailer
		{"Hello(fwd)", "Hello", true},             //
		{"Hello (FWD) (fwd)  ", "Hello", true},    // repeated, with white space
		{"(fwd)", "", true},                       //
		{"re: (fwd)", "", true},                   //
		{"[fwd: Hello]", "Hello", true},           // subj-fwd-hdr and subj-fwd-trl
		{"[Fwd: Re: Hello]", "Hello", true},       //
		{"[fwd: [fwd: x]]", "x", true},            // step 6 repeats from step 2
		{"Re: [fwd: Hello] (fwd)", "Hello", true}, //
		{"Re: [fwd: ]", "", true},                 //
		{"[fwd: a] b]", "b]", false},              // steps (3)-(5) see a blob before (6) looks
		{"Re:", "", true},                         // subjects with only a leader
		{"Re: ", "", true},                        //
		{"Re: Re:", "", true},                     //
		{"Reply: Hello", "Reply: Hello", false},   // "re" not followed by *WSP [blob] ":"
		{"Rezept", "Rezept", false},               //
		{"fw", "fw", false},                       //
		{"  Hello   world  ", "Hello world", false},
		{"Hello\r\n\tworld", "Hello world", false}, // a continuation
		{"Hello\t\tworld", "Hello world", false},
		{"\u212Ae: x", "\u212Ae: x", false}, // KELVIN SIGN is not "k", nor anything ASCII
		// RFC 2047 encoded-words, decoded before the artifacts are looked for.
		{"=?utf-8?q?Re=3A_Caf=C3=A9?=", "Café", true},
		{"=?UTF-8?B?UmU6IGjDqQ==?=", "hé", true},
		{"Re: =?iso-8859-1?q?R=E9sum=E9?=", "Résumé", true},
		{"=?windows-1252?q?=93quoted=94?=", "“quoted”", false},
		{"=?iso-8859-15?q?=A4uro?=", "€uro", false},
		{"=?utf-8?b?w6k=?= =?utf-8?b?w6k=?=", "éé", false}, // white space between words goes
		{"=?utf-8?q?a?=\r\n =?utf-8?q?b?=", "ab", false},   // also when folded
		{"=?utf-8?q?a=09b?=", "a b", false},                // decoded tabs are white space too
		{"=?koi8-r?q?=E1?= x", "\xe1 x", false},            // unknown charset: raw bytes
		{"=?utf-8?q?broken", "=?utf-8?q?broken", false},    // not an encoded-word
	}
	for _, tc := range tests {
		base, reply := BaseSubjectReply(tc.in)
		if base != tc.base || reply != tc.reply {
			t.Errorf("BaseSubjectReply(%q) = %q, %v; want %q, %v", tc.in, base, reply, tc.base, tc.reply)
		}
		if b := BaseSubject(tc.in); b != base {
			t.Errorf("BaseSubject(%q) = %q, BaseSubjectReply says %q", tc.in, b, base)
		}
	}
}

func TestFoldASCII(t *testing.T) {
	for _, tc := range []struct{ in, out string }{
		{"", ""},
		{"ABC", "ABC"},
		{"abc", "ABC"},
		{"a_b", "A_B"},
		{"é", "é"},           // nothing outside ASCII folds
		{"\u212A", "\u212A"}, // KELVIN SIGN stays
	} {
		if got := foldASCII(tc.in); got != tc.out {
			t.Errorf("foldASCII(%q) = %q, want %q", tc.in, got, tc.out)
		}
	}
	if !equalFoldASCII("FwD:", "fwd:") || equalFoldASCII("fwd", "fwe") || equalFoldASCII("é", "É") {
		t.Error("equalFoldASCII")
	}
}

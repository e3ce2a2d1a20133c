package imapwire

import (
	"encoding/base64"
	"strconv"
	"unicode/utf8"
)

func validUTF8(s string) bool { return utf8.ValidString(s) }

func uitoa(n uint64) string { return strconv.FormatUint(n, 10) }

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

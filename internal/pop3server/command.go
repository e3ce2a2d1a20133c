package pop3server

import (
	"errors"
	"strconv"
	"strings"
)

// maxLine bounds a command line. RFC 2449 section 4 allows 255 octets
// including CRLF; passwords longer than that are tolerated up to this.
const maxLine = 1024

// command is one parsed command line.
type command struct {
	// Name is the keyword, upper-cased.
	Name string
	// Args are the space-separated arguments. For PASS it holds one
	// argument: the rest of the line, spaces included (RFC 1939 section 7
	// lets the server treat spaces as part of the password).
	Args []string
}

var (
	errEmpty      = errors.New("empty command")
	errBadKeyword = errors.New("command keyword must be 3 or 4 letters")
	errBadChar    = errors.New("control character in command")
	errTooLong    = errors.New("command line too long")
)

// parseCommand parses a command line without its CRLF (RFC 1939 section 3:
// a case-insensitive keyword of three or four characters, then arguments
// separated by single spaces).
func parseCommand(line string) (command, error) {
	if len(line) > maxLine {
		return command{}, errTooLong
	}
	if line == "" {
		return command{}, errEmpty
	}
	for i := 0; i < len(line); i++ {
		if c := line[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return command{}, errBadChar
		}
	}
	name, rest, _ := strings.Cut(line, " ")
	if len(name) < 3 || len(name) > 4 {
		return command{}, errBadKeyword
	}
	for i := 0; i < len(name); i++ {
		c := name[i] | 0x20 // ASCII lower-case
		if c < 'a' || c > 'z' {
			return command{}, errBadKeyword
		}
	}
	cmd := command{Name: strings.ToUpper(name)}
	if cmd.Name == "PASS" {
		if rest != "" {
			cmd.Args = []string{rest}
		}
		return cmd, nil
	}
	if f := strings.Fields(rest); len(f) > 0 {
		cmd.Args = f
	}
	return cmd, nil
}

// parseNumber parses a message number or line count: decimal digits only,
// no sign, at most 9 digits so it always fits an int.
func parseNumber(s string) (int, bool) {
	if s == "" || len(s) > 9 {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.Atoi(s)
	return n, err == nil
}

package pop3server

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// writeMessage writes a message as the body of a multi-line response (RFC
// 1939 section 3): every line ends in CRLF (a bare LF in the store becomes
// CRLF), a line that starts with "." gets another "." in front, a last line
// without an end gets one, and ".\r\n" ends the response.
//
// bodyLines < 0 writes the whole message; otherwise it writes the header,
// the blank line and then at most bodyLines lines of the body (TOP, RFC
// 1939 section 7). A message without a blank line is all header.
func writeMessage(w *bufio.Writer, r io.Reader, bodyLines int) error {
	br := bufio.NewReaderSize(r, 32<<10)
	atLineStart, inHeader, pendingCR := true, true, false
	count := 0
	for {
		if atLineStart && !inHeader && bodyLines >= 0 && count >= bodyLines {
			break
		}
		chunk, err := br.ReadSlice('\n')
		if len(chunk) > 0 {
			if pendingCR {
				pendingCR = false
				if chunk[0] != '\n' {
					w.WriteByte('\r')
				}
			}
			if atLineStart && chunk[0] == '.' {
				w.WriteByte('.') // byte-stuffing
			}
			if chunk[len(chunk)-1] == '\n' {
				blank := atLineStart && (len(chunk) == 1 || (len(chunk) == 2 && chunk[0] == '\r'))
				line := bytes.TrimSuffix(chunk[:len(chunk)-1], []byte{'\r'})
				w.Write(line)
				w.WriteString("\r\n")
				atLineStart = true
				switch {
				case inHeader && blank:
					inHeader = false
				case !inHeader:
					count++
				}
			} else {
				if chunk[len(chunk)-1] == '\r' {
					// Hold the CR back: if the next chunk starts with LF
					// the pair is one line end.
					chunk = chunk[:len(chunk)-1]
					pendingCR = true
				}
				w.Write(chunk)
				atLineStart = false
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return err
		}
	}
	if pendingCR {
		w.WriteByte('\r')
	}
	if !atLineStart {
		w.WriteString("\r\n")
	}
	_, err := w.WriteString(".\r\n")
	return err
}

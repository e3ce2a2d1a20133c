package tcp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"

	"epost/internal/transport"
)

func encodeFrame(kind byte, payload []byte) []byte {
	var b bytes.Buffer
	w := bufio.NewWriter(&b)
	writeFrame(w, kind, payload)
	w.Flush()
	return b.Bytes()
}

func TestFrameRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		kind    byte
		payload []byte
	}{
		{kindData, nil},
		{kindData, []byte("hello")},
		{kindData, bytes.Repeat([]byte{0xab}, 1000)},
		{kindKeepalive, nil},
		{kindHello, encodeHello(hello{version: protocolVersion, addr: "[::1]:7946"})},
	} {
		var hdr [headerLen]byte
		kind, p, err := readFrame(bytes.NewReader(encodeFrame(tc.kind, tc.payload)), &hdr, 1000)
		if err != nil || kind != tc.kind || !bytes.Equal(p, tc.payload) {
			t.Errorf("kind %d, %d bytes: got kind %d, %d bytes, %v", tc.kind, len(tc.payload), kind, len(p), err)
		}
	}
}

func TestReadFrameErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		bytes []byte
		want  error
	}{
		{"empty", nil, io.EOF},
		{"short header", []byte{0, 0, 0}, io.ErrUnexpectedEOF},
		{"zero length", header(0, kindData), ErrBadFrame},
		{"over limit", header(1002, kindData), transport.ErrFrameTooLong},
		{"max uint32", header(0xffffffff, kindData), transport.ErrFrameTooLong},
		{"unknown kind", header(1, 0), ErrBadFrame},
		{"keepalive payload", append(header(2, kindKeepalive), 0), ErrBadFrame},
		{"truncated payload", append(header(10, kindData), 1, 2, 3), io.ErrUnexpectedEOF},
	} {
		var hdr [headerLen]byte
		_, _, err := readFrame(bytes.NewReader(tc.bytes), &hdr, 1000)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
}

func TestDecodeHello(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    []byte
		ok   bool
	}{
		{"ok", encodeHello(hello{version: protocolVersion, addr: "10.0.0.1:7946"}), true},
		{"no address", encodeHello(hello{version: protocolVersion}), true},
		{"short", []byte{0}, false},
		{"old version", encodeHello(hello{version: 0, addr: "10.0.0.1:7946"}), false},
		{"not host:port", encodeHello(hello{version: protocolVersion, addr: "nonsense"}), false},
		{"no port", encodeHello(hello{version: protocolVersion, addr: "host:"}), false},
		{"too long", encodeHello(hello{version: protocolVersion, addr: string(bytes.Repeat([]byte("a"), 300)) + ":1"}), false},
	} {
		if _, err := decodeHello(tc.p); (err == nil) != tc.ok {
			t.Errorf("%s: err %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

// FuzzReadFrame feeds arbitrary bytes to the frame and hello decoders: they must return an error
// or a well-formed frame, never panic, and never return more than the limit.
func FuzzReadFrame(f *testing.F) {
	f.Add(encodeFrame(kindData, []byte("payload")))
	f.Add(encodeFrame(kindKeepalive, nil))
	f.Add(encodeFrame(kindHello, encodeHello(hello{version: protocolVersion, addr: "127.0.0.1:1"})))
	f.Add(header(0, kindData))
	f.Add(header(0xffffffff, kindData))
	f.Add(append(header(5, 7), 1, 2))
	f.Add(append(encodeFrame(kindData, []byte("a")), encodeFrame(kindData, []byte("b"))...))
	const max = 4096
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		var hdr [headerLen]byte
		for {
			kind, p, err := readFrame(r, &hdr, max)
			if err != nil {
				return
			}
			if len(p) > max {
				t.Fatalf("payload of %d bytes exceeds the limit %d", len(p), max)
			}
			switch kind {
			case kindData:
			case kindKeepalive:
				if len(p) != 0 {
					t.Fatalf("keepalive with payload")
				}
			case kindHello:
				if h, err := decodeHello(p); err == nil && len(h.addr) > maxAddrLen {
					t.Fatalf("hello address of %d bytes accepted", len(h.addr))
				}
			default:
				t.Fatalf("unknown kind %d accepted", kind)
			}
		}
	})
}

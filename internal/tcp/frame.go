package tcp

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"

	"epost/internal/transport"
)

// Frame kinds; see the package documentation for the wire format.
const (
	kindData      byte = 1
	kindHello     byte = 2
	kindKeepalive byte = 3
)

const (
	// headerLen is the 4-byte length plus the kind byte.
	headerLen = 5
	// protocolVersion is carried in the hello; a peer with another version is refused.
	protocolVersion uint16 = 1
	// maxAddrLen bounds the advertised address in a hello.
	maxAddrLen = 255
	// maxHelloPayload bounds the first frame read from a peer, so that nothing large is
	// allocated before the hello has been checked.
	maxHelloPayload = 2 + maxAddrLen
)

// ErrBadFrame reports bytes on a connection that do not follow the wire format.
var ErrBadFrame = errors.New("tcp: malformed frame")

// FrameSizeError is returned by the frame reader when a peer announces a frame longer than the
// limit. It matches transport.ErrFrameTooLong with errors.Is.
type FrameSizeError struct {
	Size uint64 // announced payload size
	Max  int    // limit in force
}

func (e *FrameSizeError) Error() string {
	return fmt.Sprintf("%v: %d bytes announced, limit %d", transport.ErrFrameTooLong, e.Size, e.Max)
}

// Is makes errors.Is(err, transport.ErrFrameTooLong) true.
func (e *FrameSizeError) Is(target error) bool { return target == transport.ErrFrameTooLong }

// readFrame reads one frame. It checks the announced length against max BEFORE allocating, so a
// peer cannot make us allocate more than max bytes. A clean EOF at a frame boundary is io.EOF; an
// EOF inside a frame is io.ErrUnexpectedEOF. hdr is scratch space owned by the caller (it lets
// the reader loop avoid one allocation per frame).
func readFrame(r io.Reader, hdr *[headerLen]byte, max int) (kind byte, payload []byte, err error) {
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:4])
	if n == 0 {
		return 0, nil, fmt.Errorf("%w: zero length", ErrBadFrame)
	}
	size := uint64(n) - 1
	if size > uint64(max) {
		return 0, nil, &FrameSizeError{Size: size, Max: max}
	}
	kind = hdr[4]
	switch kind {
	case kindData, kindHello:
	case kindKeepalive:
		if size != 0 {
			return 0, nil, fmt.Errorf("%w: keepalive with %d payload bytes", ErrBadFrame, size)
		}
	default:
		return 0, nil, fmt.Errorf("%w: unknown kind %d", ErrBadFrame, kind)
	}
	payload = make([]byte, size)
	if _, err := io.ReadFull(r, payload); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return kind, payload, nil
}

// writeFrame appends one frame to w; the caller flushes.
func writeFrame(w *bufio.Writer, kind byte, payload []byte) error {
	return writeFrameParts(w, kind, payload, nil)
}

// writeFrameParts appends one frame whose payload is head followed by tail.
func writeFrameParts(w *bufio.Writer, kind byte, head, tail []byte) error {
	var hdr [headerLen]byte
	binary.BigEndian.PutUint32(hdr[:4], uint32(len(head)+len(tail)+1))
	hdr[4] = kind
	if _, err := w.Write(hdr[:]); err != nil {
		return err
	}
	if _, err := w.Write(head); err != nil {
		return err
	}
	_, err := w.Write(tail)
	return err
}

// hello is the first frame in each direction.
type hello struct {
	version uint16
	addr    string // the sender's listening address, "" if it has none to advertise
}

func encodeHello(h hello) []byte {
	p := make([]byte, 2, 2+len(h.addr))
	binary.BigEndian.PutUint16(p, h.version)
	return append(p, h.addr...)
}

// decodeHello checks a hello payload. The address must be host:port (or empty): it is what the
// overlay will dial, so reject junk here rather than there.
func decodeHello(p []byte) (hello, error) {
	if len(p) < 2 {
		return hello{}, fmt.Errorf("%w: hello of %d bytes", ErrBadFrame, len(p))
	}
	h := hello{version: binary.BigEndian.Uint16(p), addr: string(p[2:])}
	if h.version != protocolVersion {
		return hello{}, fmt.Errorf("%w: protocol version %d, want %d", ErrBadFrame, h.version, protocolVersion)
	}
	if len(h.addr) > maxAddrLen {
		return hello{}, fmt.Errorf("%w: advertised address of %d bytes", ErrBadFrame, len(h.addr))
	}
	if h.addr != "" {
		if _, port, err := net.SplitHostPort(h.addr); err != nil || port == "" {
			return hello{}, fmt.Errorf("%w: advertised address %q is not host:port", ErrBadFrame, h.addr)
		}
	}
	return h, nil
}

var _ transport.PartsSender = (*Transport)(nil)

// outFrame is a queued frame's payload: head followed by tail (Transport.SendParts).
type outFrame struct{ head, tail []byte }

func (f outFrame) len() int { return len(f.head) + len(f.tail) }

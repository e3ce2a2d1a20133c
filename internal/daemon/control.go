package daemon

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// The control protocol: a client connects to NODEDIR/control.sock, writes one JSON request
// followed by a newline, and reads JSON lines until the final response; then both close.
//
//	request:  {"op": "status"}
//	response: {"ok": true, "status": {...}}  or  {"ok": false, "error": "..."}
//
// Operations (ControlRequest has their fields):
//
//	status            the node's Status
//	object_put        data (base64): insert a content-hash object; "object" is the outcome
//	object_get        key: look an object up in the ring; "object" has its data, verified
//	object_bulk_put   count, size, concurrency, seed: insert count random objects of size bytes
//	object_bulk_get   keys, concurrency: look keys up
//	object_held       list the live objects in this node's own store (no network)
//
// The bulk operations and object_held stream: before the final response they send one line
// {"item": {...}} per object (ObjectResult or HeldObject), as soon as it is known, so that a
// test learns exactly which inserts were acknowledged even if the node dies mid-way. A bulk
// insert's item has "error" set when that insert failed. The final line of a bulk operation
// carries "summary" (BulkSummary).
//
// The socket is mode 0600 inside the 0700 node directory: only the node's owner may ask.

// FileControl is the control socket's name in the node directory.
const FileControl = "control.sock"

// maxControlRequest bounds a request line: an object of 1 MiB in base64, or a bulk lookup's
// list of keys.
const maxControlRequest = 4 << 20

// maxControlResponse bounds one response line a client reads (an object in base64 and its
// metadata, or a status).
const maxControlResponse = 4 << 20

// ErrNotRunning matches (errors.Is) the error Query returns when no node answers on the
// control socket.
var ErrNotRunning = errors.New("daemon: no node running")

// notRunningError is the user-facing form of ErrNotRunning: its text starts with what the user
// needs to read ("no node running in DIR ...") rather than a package prefix.
type notRunningError struct{ msg string }

func (e *notRunningError) Error() string        { return e.msg }
func (e *notRunningError) Is(target error) bool { return target == ErrNotRunning }

// ControlPath is the control socket of the node directory dir.
func ControlPath(dir string) string { return filepath.Join(dir, FileControl) }

// ControlRequest is one request on the control socket; Op selects the fields that matter.
type ControlRequest struct {
	Op string `json:"op"`

	Data         []byte `json:"data,omitempty"`          // object_put
	LeaseSeconds int64  `json:"lease_seconds,omitempty"` // object_put, object_bulk_put (0: 30 days)
	Key          string `json:"key,omitempty"`           // object_get

	Count       int      `json:"count,omitempty"`       // object_bulk_put
	Size        int      `json:"size,omitempty"`        // object_bulk_put: bytes per object
	Seed        uint64   `json:"seed,omitempty"`        // object_bulk_put: 0 picks one (reported)
	Keys        []string `json:"keys,omitempty"`        // object_bulk_get
	Concurrency int      `json:"concurrency,omitempty"` // bulk: operations in flight (default 16)
}

type controlResponse struct {
	OK      bool            `json:"ok"`
	Error   string          `json:"error,omitempty"`
	Status  *Status         `json:"status,omitempty"`
	Object  *ObjectResult   `json:"object,omitempty"`
	Item    json.RawMessage `json:"item,omitempty"`
	Summary *BulkSummary    `json:"summary,omitempty"`
}

// sunPathMax is the longest Unix socket path the kernel accepts (sizeof sun_path minus the NUL).
const sunPathMax = 107

// listenControl creates the control socket. A socket file left by a node that died is removed;
// one that answers means a node is already running in dir, and starting a second is refused.
func listenControl(dir string) (net.Listener, error) {
	path := ControlPath(dir)
	if len(path) > sunPathMax {
		return nil, fmt.Errorf("control socket path %s is %d bytes, longer than the %d a Unix socket allows: move the node directory to a shorter path",
			path, len(path), sunPathMax)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("a node is already running in %s (its control socket %s answers); stop it first", dir, path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale control socket: %w", err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	// Listen creates the file with the umask's permissions; tighten it before anyone asks.
	// The node directory is 0700 as well, so there is no window for other users.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return ln, nil
}

// serveControl answers requests until the listener closes.
func (n *Node) serveControl(ln net.Listener) {
	defer n.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			n.log.Warn("control socket: accept failed", "err", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			n.answerControl(c)
		}()
	}
}

func (n *Node) answerControl(c net.Conn) {
	defer c.Close()
	// A long request (a bulk insert) ends when the node stops: closing the connection unblocks
	// its writes.
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-n.stop:
			c.Close()
		case <-done:
		}
	}()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(io.LimitReader(c, maxControlRequest)).ReadBytes('\n')
	if err != nil && !(errors.Is(err, io.EOF) && len(line) > 0) {
		return
	}
	w := &lineWriter{c: c}
	var req ControlRequest
	if err := json.Unmarshal(line, &req); err != nil {
		w.final(controlResponse{Error: "bad request: " + err.Error()})
		return
	}
	n.dispatch(w, &req)
}

// Query asks the node running in dir for its status. When none runs it returns an error
// wrapping ErrNotRunning that tells the user how to start one.
func Query(dir string, timeout time.Duration) (*Status, error) {
	resp, err := Call(dir, &ControlRequest{Op: "status"}, timeout, nil)
	if err != nil {
		return nil, err
	}
	if resp.Status == nil {
		return nil, fmt.Errorf("node in %s: no status in its answer", dir)
	}
	return resp.Status, nil
}

// dialControl connects to the control socket of dir, with advice when no node answers.
func dialControl(dir string, timeout time.Duration) (net.Conn, error) {
	path := ControlPath(dir)
	c, err := net.DialTimeout("unix", path, timeout)
	if err == nil {
		return c, nil
	}
	switch {
	case errors.Is(err, os.ErrNotExist), errors.Is(err, syscall.ENOENT):
		return nil, &notRunningError{fmt.Sprintf("no node running in %s (control socket missing): start it with epost node run --dir %s", dir, dir)}
	case errors.Is(err, syscall.ECONNREFUSED):
		return nil, &notRunningError{fmt.Sprintf("no node running in %s (control socket %s does not answer: the node died without cleaning up): start it with epost node run --dir %s",
			dir, path, dir)}
	case errors.Is(err, syscall.EACCES):
		return nil, fmt.Errorf("control socket %s: permission denied: run epost as the user that runs the node", path)
	}
	return nil, fmt.Errorf("control socket %s: %w", path, err)
}

// Response is a control request's final answer.
type Response struct {
	Status  *Status
	Object  *ObjectResult
	Summary *BulkSummary
}

// Call sends req to the node running in dir and returns its final answer. Streamed items are
// passed to onItem as raw JSON, in order; an error from onItem ends the call. timeout bounds
// the wait for each line, not the whole call. A refusal by the node comes back as an error
// starting with "node in DIR:"; Response may still hold details (an insert's counts).
func Call(dir string, req *ControlRequest, timeout time.Duration, onItem func(json.RawMessage) error) (Response, error) {
	c, err := dialControl(dir, timeout)
	if err != nil {
		return Response{}, err
	}
	defer c.Close()
	path := ControlPath(dir)
	_ = c.SetDeadline(time.Now().Add(timeout))
	line, _ := json.Marshal(req) // the request holds only marshalable types
	if _, err := c.Write(append(line, '\n')); err != nil {
		return Response{}, fmt.Errorf("control socket %s: %w", path, err)
	}
	br := bufio.NewReaderSize(c, 64<<10)
	for {
		_ = c.SetDeadline(time.Now().Add(timeout))
		line, err := readLine(br, maxControlResponse)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return Response{}, fmt.Errorf("node in %s did not answer within %v: it may be overloaded or stuck (see its log); retry with a longer --timeout", dir, timeout)
			}
			return Response{}, fmt.Errorf("control socket %s: no complete answer (did the node stop?): %w", path, err)
		}
		var resp controlResponse
		if err := json.Unmarshal(line, &resp); err != nil {
			return Response{}, fmt.Errorf("control socket %s: bad answer: %w", path, err)
		}
		if resp.Item != nil && !resp.OK && resp.Error == "" {
			if onItem != nil {
				if err := onItem(resp.Item); err != nil {
					return Response{}, err
				}
			}
			continue
		}
		out := Response{Status: resp.Status, Object: resp.Object, Summary: resp.Summary}
		if !resp.OK {
			return out, fmt.Errorf("node in %s: %s", dir, resp.Error)
		}
		return out, nil
	}
}

// readLine reads one newline-terminated line of at most limit bytes (the newline may be
// missing at EOF).
func readLine(br *bufio.Reader, limit int) ([]byte, error) {
	var out []byte
	for {
		chunk, err := br.ReadSlice('\n')
		out = append(out, chunk...)
		if len(out) > limit {
			return nil, fmt.Errorf("answer line longer than %d bytes", limit)
		}
		switch {
		case err == nil:
			return out, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(out) > 0:
			return out, nil
		default:
			return nil, err
		}
	}
}

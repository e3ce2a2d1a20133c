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
// followed by a newline, and reads one JSON response followed by a newline; then both close.
//
//	request:  {"op": "status"}
//	response: {"ok": true, "status": {...}}  or  {"ok": false, "error": "..."}
//
// The socket is mode 0600 inside the 0700 node directory: only the node's owner may ask.

// FileControl is the control socket's name in the node directory.
const FileControl = "control.sock"

// maxControlRequest bounds a request line; requests are tiny.
const maxControlRequest = 4 << 10

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

type controlRequest struct {
	Op string `json:"op"`
}

type controlResponse struct {
	OK     bool    `json:"ok"`
	Error  string  `json:"error,omitempty"`
	Status *Status `json:"status,omitempty"`
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
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(io.LimitReader(c, maxControlRequest)).ReadBytes('\n')
	if err != nil && !(errors.Is(err, io.EOF) && len(line) > 0) {
		return
	}
	var req controlRequest
	var resp controlResponse
	if err := json.Unmarshal(line, &req); err != nil {
		resp.Error = "bad request: " + err.Error()
	} else {
		switch req.Op {
		case "status":
			st := n.Status()
			resp.OK, resp.Status = true, &st
		default:
			resp.Error = fmt.Sprintf("unknown op %q (known: status)", req.Op)
		}
	}
	out, _ := json.Marshal(resp) // the response holds only marshalable types
	_, _ = c.Write(append(out, '\n'))
}

// Query asks the node running in dir for its status. When none runs it returns an error
// wrapping ErrNotRunning that tells the user how to start one.
func Query(dir string, timeout time.Duration) (*Status, error) {
	path := ControlPath(dir)
	c, err := net.DialTimeout("unix", path, timeout)
	if err != nil {
		switch {
		case errors.Is(err, os.ErrNotExist), errors.Is(err, syscall.ENOENT):
			return nil, &notRunningError{fmt.Sprintf("no node running in %s (control socket missing): start it with epost node run --dir %s", dir, dir)}
		case errors.Is(err, syscall.ECONNREFUSED):
			return nil, &notRunningError{fmt.Sprintf("no node running in %s (control socket %s does not answer: the node died without cleaning up): start it with epost node run --dir %s",
				dir, path, dir)}
		case errors.Is(err, syscall.EACCES):
			return nil, fmt.Errorf("control socket %s: permission denied: run epost status as the user that runs the node", path)
		}
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	req, _ := json.Marshal(controlRequest{Op: "status"})
	if _, err := c.Write(append(req, '\n')); err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	line, err := bufio.NewReader(io.LimitReader(c, 16<<20)).ReadBytes('\n')
	if err != nil && !(errors.Is(err, io.EOF) && len(line) > 0) {
		return nil, fmt.Errorf("control socket %s: no answer: %w", path, err)
	}
	var resp controlResponse
	if err := json.Unmarshal(line, &resp); err != nil {
		return nil, fmt.Errorf("control socket %s: bad answer: %w", path, err)
	}
	if !resp.OK || resp.Status == nil {
		return nil, fmt.Errorf("node in %s: %s", dir, resp.Error)
	}
	return resp.Status, nil
}

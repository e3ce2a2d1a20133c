package smtpserver

import (
	"net"
	"sync"
	"time"
)

// limitListener enforces Config.MaxConns and wraps each connection in an
// idleConn. A connection over the limit gets 421 (RFC 5321 section 3.8)
// and is closed without reaching go-smtp.
type limitListener struct {
	net.Listener
	srv *Server
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		release := func() {}
		if l.srv.conns != nil {
			select {
			case l.srv.conns <- struct{}{}:
				release = func() { <-l.srv.conns }
			default:
				l.srv.refused.Add(1)
				l.srv.log.Warn("smtp connection refused: too many connections",
					"remote", c.RemoteAddr().String(), "max", l.srv.cfg.MaxConns)
				c.SetWriteDeadline(time.Now().Add(time.Second))
				c.Write([]byte("421 4.7.0 " + l.srv.cfg.Domain + " too many connections, try again later\r\n"))
				c.Close()
				continue
			}
		}
		releaseAddr, ok := l.srv.perAddr.Acquire(c.RemoteAddr())
		if !ok {
			release()
			l.srv.log.Warn("smtp connection refused: too many connections from its address",
				"remote", c.RemoteAddr().String(), "max", l.srv.cfg.MaxConnsPerAddr)
			c.SetWriteDeadline(time.Now().Add(time.Second))
			c.Write([]byte("421 4.7.0 " + l.srv.cfg.Domain + " too many connections from your address, try again later\r\n"))
			c.Close()
			continue
		}
		l.srv.open.Add(1)
		slot := release
		release = func() { releaseAddr(); slot(); l.srv.open.Add(-1) }
		l.srv.log.Debug("smtp connection", "remote", c.RemoteAddr().String())
		return &idleConn{Conn: c, timeout: l.srv.cfg.IdleTimeout, release: release}, nil
	}
}

// idleConn pushes the deadline forward on every read and write, so the
// timeout bounds silence, not the length of a transfer.
type idleConn struct {
	net.Conn
	timeout time.Duration
	once    sync.Once
	release func()
}

func (c *idleConn) Read(b []byte) (int, error) {
	c.Conn.SetReadDeadline(time.Now().Add(c.timeout))
	return c.Conn.Read(b)
}

func (c *idleConn) Write(b []byte) (int, error) {
	c.Conn.SetWriteDeadline(time.Now().Add(c.timeout))
	return c.Conn.Write(b)
}

func (c *idleConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}

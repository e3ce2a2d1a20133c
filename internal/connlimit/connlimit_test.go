package connlimit

import (
	"net"
	"testing"
)

func TestPerAddr(t *testing.T) {
	l := New(2)
	a := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 1000}
	a2 := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 1001}
	b := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 2), Port: 1000}
	r1, ok1 := l.Acquire(a)
	_, ok2 := l.Acquire(a2)
	if !ok1 || !ok2 {
		t.Fatal("two connections from one address refused under a bound of 2")
	}
	if _, ok := l.Acquire(a); ok {
		t.Fatal("a third connection from one address taken")
	}
	if _, ok := l.Acquire(b); !ok {
		t.Fatal("another address refused")
	}
	r1()
	r1() // a second release is a no-op
	if _, ok := l.Acquire(a); !ok {
		t.Fatal("a released slot was not given back")
	}
	if _, ok := l.Acquire(a); ok {
		t.Fatal("a double release gave two slots back")
	}
	if l.Refused() != 2 {
		t.Fatalf("refused %d, want 2", l.Refused())
	}
	// IPv4-mapped IPv6 is the same address.
	m := &net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.2"), Port: 9}
	if _, ok := l.Acquire(m); !ok {
		t.Fatal("second connection of b refused")
	}
	if _, ok := l.Acquire(m); ok {
		t.Fatal("a mapped address escapes its bound")
	}
	var none *PerAddr
	if _, ok := none.Acquire(a); !ok || New(0).Max() != 0 {
		t.Fatal("an unbounded limiter refused")
	}
}

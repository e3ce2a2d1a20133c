package wire

import (
	"errors"
	"testing"

	"epost/internal/ids"
)

func TestRoundTrip(t *testing.T) {
	var w Writer
	id := ids.HashString("x")
	w.U8(7)
	w.U16(65535)
	w.U32(1 << 31)
	w.U64(1<<64 - 1)
	w.I64(-5)
	w.ID(id)
	w.Bytes([]byte("hello"))
	w.String("world")
	w.Uvarint(300)
	r := NewReader(w.B)
	if r.U8() != 7 || r.U16() != 65535 || r.U32() != 1<<31 || r.U64() != 1<<64-1 || r.I64() != -5 ||
		r.ID() != id || string(r.Bytes(10, "b")) != "hello" || r.String(10, "s") != "world" || r.Uvarint() != 300 {
		t.Fatal("round trip differs")
	}
	if err := r.Done(); err != nil {
		t.Fatal(err)
	}
}

// View shares the input, and an append to what it returns must not write into the input.
func TestViewSharesWithoutSpilling(t *testing.T) {
	var w Writer
	w.Bytes([]byte("abc"))
	w.U8(9)
	r := NewReader(w.B)
	v := r.View(10, "v")
	if string(v) != "abc" || &v[0] != &w.B[1] || cap(v) != 3 {
		t.Fatalf("view %q cap %d does not share the input", v, cap(v))
	}
	_ = append(v, 'x')
	if r.U8() != 9 || r.Done() != nil {
		t.Fatal("an append to a view wrote into the input")
	}
	if b := NewReader(w.B); b.View(2, "v") != nil || !errors.Is(b.Err(), ErrMalformed) {
		t.Fatal("over-limit length accepted")
	}
}

func TestLimitsAndErrors(t *testing.T) {
	var w Writer
	w.Bytes(make([]byte, 100))
	if b := NewReader(w.B); b.Bytes(99, "x") != nil || !errors.Is(b.Err(), ErrMalformed) {
		t.Fatal("over-limit length accepted")
	}
	if b := NewReader([]byte{0x80, 0x00}); b.Uvarint() != 0 || b.Err() == nil {
		t.Fatal("overlong varint accepted")
	}
	if b := NewReader([]byte{0xff, 0xff, 0x03}); b.Count(1000, 1, "n") != 0 || b.Err() == nil {
		t.Fatal("count larger than the remaining bytes accepted")
	}
	r := NewReader([]byte{1})
	r.U32()
	if r.U8() != 0 || r.Err() == nil || r.Done() == nil {
		t.Fatal("reads after an error must return zero and keep the error")
	}
}

func FuzzReader(f *testing.F) {
	f.Add([]byte{1, 2, 3})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := NewReader(b)
		r.Uvarint()
		r.Bytes(1<<20, "b")
		r.View(1<<20, "v")
		r.Count(1<<10, 33, "n")
		r.String(64, "s")
		r.ID()
		_ = r.Done()
	})
}

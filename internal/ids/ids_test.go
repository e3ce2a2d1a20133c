package ids

import (
	"math/big"
	"math/rand/v2"
	"testing"
)

var mod = new(big.Int).Lsh(big.NewInt(1), Bits)

func toBig(a ID) *big.Int { return new(big.Int).SetBytes(a[:]) }

func fromBig(x *big.Int) ID {
	var id ID
	x = new(big.Int).Mod(x, mod)
	x.FillBytes(id[:])
	return id
}

func randID(r *rand.Rand) ID {
	var id ID
	for i := range id {
		id[i] = byte(r.Uint32())
	}
	// Sometimes share a long prefix or sit near the wrap point, where bugs hide.
	switch r.IntN(4) {
	case 0:
		for i := 0; i < r.IntN(Bytes); i++ {
			id[i] = 0xff
		}
	case 1:
		for i := 0; i < r.IntN(Bytes); i++ {
			id[i] = 0
		}
	}
	return id
}

func TestArithmeticMatchesBigInt(t *testing.T) {
	seed := uint64(1)
	r := rand.New(rand.NewPCG(seed, 0))
	for n := 0; n < 20000; n++ {
		a, b := randID(r), randID(r)
		A, B := toBig(a), toBig(b)
		if got, want := Add(a, b), fromBig(new(big.Int).Add(A, B)); got != want {
			t.Fatalf("seed %d: Add(%s,%s)=%s want %s", seed, a, b, got, want)
		}
		if got, want := Sub(a, b), fromBig(new(big.Int).Sub(A, B)); got != want {
			t.Fatalf("seed %d: Sub = %s want %s", seed, got, want)
		}
		if got, want := Cmp(a, b), A.Cmp(B); got != want {
			t.Fatalf("seed %d: Cmp = %d want %d", seed, got, want)
		}
		cw := new(big.Int).Mod(new(big.Int).Sub(B, A), mod)
		ccw := new(big.Int).Mod(new(big.Int).Sub(A, B), mod)
		d := cw
		if ccw.Cmp(cw) < 0 {
			d = ccw
		}
		if got := Distance(a, b); got != fromBig(d) {
			t.Fatalf("seed %d: Distance = %s want %s", seed, got, fromBig(d))
		}
		if Distance(a, b) != Distance(b, a) {
			t.Fatalf("seed %d: Distance not symmetric", seed)
		}
		p := SharedPrefix(a, b)
		for i := 0; i < p; i++ {
			if a.Digit(i) != b.Digit(i) {
				t.Fatalf("seed %d: digit %d differs inside shared prefix %d", seed, i, p)
			}
		}
		if p < Digits && a.Digit(p) == b.Digit(p) {
			t.Fatalf("seed %d: digit %d equal after shared prefix", seed, p)
		}
	}
}

func TestDigitsRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(2, 0))
	for n := 0; n < 1000; n++ {
		a := randID(r)
		var b ID
		for i := 0; i < Digits; i++ {
			b = b.WithDigit(i, a.Digit(i))
		}
		if a != b {
			t.Fatalf("digit round trip: %s != %s", a, b)
		}
		s, err := Parse(a.String())
		if err != nil || s != a {
			t.Fatalf("parse round trip: %v %s", err, s)
		}
	}
}

func TestBetweenAndCloser(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 0))
	for n := 0; n < 5000; n++ {
		from, x, to := randID(r), randID(r), randID(r)
		want := toBig(Sub(x, from)).Sign() > 0 && toBig(Sub(x, from)).Cmp(toBig(Sub(to, from))) <= 0
		if Between(from, x, to) != want {
			t.Fatalf("Between(%s,%s,%s)", from, x, to)
		}
		if Closer(from, x, to) && Closer(from, to, x) {
			t.Fatalf("Closer not antisymmetric")
		}
	}
}

func TestFraction(t *testing.T) {
	for _, n := range []int{1, 2, 3, 48, 255, 256} {
		for i := 0; i < n; i++ {
			want := fromBig(new(big.Int).Div(new(big.Int).Mul(big.NewInt(int64(i)), mod), big.NewInt(int64(n))))
			if got := Fraction(i, n); got != want {
				t.Fatalf("Fraction(%d,%d)=%s want %s", i, n, got, want)
			}
		}
	}
}

func TestKeyRoundTrip(t *testing.T) {
	k := Key{Ring: RingIDOf("example"), ID: HashString("x")}
	got, err := ParseKey(k.Full())
	if err != nil || got != k {
		t.Fatalf("ParseKey: %v %v", got, err)
	}
	if _, err := ParseKey("nonsense"); err == nil {
		t.Fatal("ParseKey accepted nonsense")
	}
}

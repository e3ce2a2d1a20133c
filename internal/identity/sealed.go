package identity

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	cryptorand "crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"sync"
	"time"

	"golang.org/x/crypto/argon2"
)

// SealOptions are the Argon2id parameters (RFC 9106) for SealPrivate. They are stored in the
// blob, so OpenPrivate needs none.
type SealOptions struct {
	Time      uint32 // passes over memory, 1..16
	MemoryKiB uint32 // 8*Threads .. 1 GiB
	Threads   uint8  // 1..64
}

// DefaultSealOptions is RFC 9106 section 4's second recommended option (t=3, 64 MiB, p=4):
// about 0.1-0.2 s on a current machine, once per login that misses the PasswordCache.
var DefaultSealOptions = SealOptions{Time: 3, MemoryKiB: 64 << 10, Threads: 4}

// Bounds enforced by SealPrivate and, against a crafted blob asking for 4 TiB of memory, by
// OpenPrivate.
const (
	maxSealTime      = 16
	maxSealMemoryKiB = 1 << 20
	maxSealThreads   = 64
)

func (o SealOptions) check() error {
	if o.Time < 1 || o.Time > maxSealTime ||
		o.Threads < 1 || o.Threads > maxSealThreads ||
		o.MemoryKiB < 8*uint32(o.Threads) || o.MemoryKiB > maxSealMemoryKiB {
		return fmt.Errorf("%w: argon2id parameters t=%d m=%dKiB p=%d out of range", ErrMalformed, o.Time, o.MemoryKiB, o.Threads)
	}
	return nil
}

// Format of a sealed private-key blob, version 1:
//
//	u8  version (1)
//	u8  KDF (1 = Argon2id)
//	u32 time, u32 memory KiB, u8 threads
//	16  salt
//	u8  n, n bytes: normalized address
//	12  nonce
//	80  AES-256-GCM(key, nonce, ed25519 seed (32) || x25519 scalar (32), aad)
//
// key = Argon2id(password, sealKDFLabel || salt, time, memory, threads, 32) and
// aad = sealAADLabel || every byte before the ciphertext: the address and the parameters are
// authenticated, so a blob cannot be moved to another user or weakened undetected.
const (
	sealVersion  = 1
	sealArgon2id = 1
	sealSaltSize = 16
	sealKDFLabel = "epost/v1/private-keys/kdf\x00"
	sealAADLabel = "epost/v1/private-keys\x00"
)

// SealPrivate encrypts keys under password for storage on the user's node (the only place
// private keys live). address is the user's address, bound into the blob. rand (crypto/rand if
// nil) supplies salt and nonce.
func SealPrivate(keys *Keys, address string, password []byte, rand io.Reader, opts SealOptions) ([]byte, error) {
	if rand == nil {
		rand = cryptorand.Reader
	}
	if err := opts.check(); err != nil {
		return nil, fmt.Errorf("identity: seal private keys: %w", err)
	}
	a, err := NormalizeAddress(address)
	if err != nil {
		return nil, fmt.Errorf("identity: seal private keys: %w", err)
	}
	var salt [sealSaltSize]byte
	var nonce [12]byte
	if _, err := io.ReadFull(rand, salt[:]); err != nil {
		return nil, fmt.Errorf("identity: seal private keys: %w", err)
	}
	if _, err := io.ReadFull(rand, nonce[:]); err != nil {
		return nil, fmt.Errorf("identity: seal private keys: %w", err)
	}
	e := encoder{b: make([]byte, 0, 160)}
	e.u8(sealVersion)
	e.u8(sealArgon2id)
	e.u32(opts.Time)
	e.u32(opts.MemoryKiB)
	e.u8(opts.Threads)
	e.raw(salt[:])
	e.str8(a)
	e.raw(nonce[:])
	aead := sealAEAD(password, salt[:], opts)
	seed := keys.seed()
	defer clear(seed)
	return aead.Seal(e.b, nonce[:], seed, sealAAD(e.b)), nil
}

type sealedBlob struct {
	opts       SealOptions
	salt       []byte
	address    string
	nonce      []byte
	header     []byte
	ciphertext []byte
}

func parseSealed(blob []byte) (*sealedBlob, error) {
	d := decoder{b: blob}
	var s sealedBlob
	version, kdf := d.u8(), d.u8()
	s.opts = SealOptions{Time: d.u32(), MemoryKiB: d.u32(), Threads: d.u8()}
	s.salt = d.take(sealSaltSize)
	s.address = d.str8()
	s.nonce = d.take(12)
	s.header = blob[:len(blob)-len(d.b)]
	s.ciphertext = d.take(privateKeysSize + 16)
	if err := d.finish(); err != nil {
		return nil, fmt.Errorf("identity: sealed private keys: %w", err)
	}
	if version != sealVersion || kdf != sealArgon2id {
		return nil, fmt.Errorf("%w: sealed private keys version %d KDF %d, want %d and %d", ErrMalformed, version, kdf, sealVersion, sealArgon2id)
	}
	if err := s.opts.check(); err != nil {
		return nil, fmt.Errorf("identity: sealed private keys: %w", err)
	}
	if a, err := NormalizeAddress(s.address); err != nil || a != s.address {
		return nil, fmt.Errorf("%w: sealed private keys: bad address %q", ErrMalformed, s.address)
	}
	return &s, nil
}

// SealedAddress returns the address a blob is bound to, without the password.
func SealedAddress(blob []byte) (string, error) {
	s, err := parseSealed(blob)
	if err != nil {
		return "", err
	}
	return s.address, nil
}

// OpenPrivate decrypts a blob made by SealPrivate, returning the keys and the address they
// belong to. A wrong password (or a tampered blob) gives ErrWrongPassword; bytes that are not
// a blob give ErrMalformed.
//
// OpenPrivate is also the password check for IMAP, SMTP and POP3 logins: the password is right
// exactly when the blob opens. It costs one Argon2id run (DefaultSealOptions: 64 MiB, a
// fraction of a second), which throttles guessing; servers should bound how many run at once,
// and may put a PasswordCache in front so that a client's repeated logins stay cheap.
func OpenPrivate(blob, password []byte) (*Keys, string, error) {
	s, err := parseSealed(blob)
	if err != nil {
		return nil, "", err
	}
	aead := sealAEAD(password, s.salt, s.opts)
	seed, err := aead.Open(nil, s.nonce, s.ciphertext, sealAAD(s.header))
	if err != nil {
		return nil, "", fmt.Errorf("%w for %s", ErrWrongPassword, s.address)
	}
	defer clear(seed)
	k, err := keysFromSeed(seed)
	if err != nil {
		return nil, "", err
	}
	return k, s.address, nil
}

func sealAEAD(password, salt []byte, o SealOptions) cipher.AEAD {
	ksalt := append([]byte(sealKDFLabel), salt...)
	key := argon2.IDKey(password, ksalt, o.Time, o.MemoryKiB, o.Threads, 32)
	defer clear(key)
	block, err := aes.NewCipher(key)
	if err != nil {
		panic("identity: aes with a 32-byte key: " + err.Error()) // unreachable
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic("identity: gcm: " + err.Error()) // unreachable
	}
	return aead
}

func sealAAD(header []byte) []byte { return append([]byte(sealAADLabel), header...) }

// PasswordCache makes repeated logins cheap: after a blob has opened once with a password, the
// same (blob, password) pair is recognized with one HMAC instead of an Argon2id run. A wrong
// password still costs the full Argon2id run, so guessing is not made faster.
//
// The cache keeps, per blob, HMAC-SHA256 under a random per-process key of the password, and
// the opened keys. Whoever can read the process memory can therefore test passwords at HMAC
// speed, but such an attacker already holds the decrypted private keys. Changing the password
// changes the blob, which misses the cache. A PasswordCache is safe for concurrent use.
type PasswordCache struct {
	mu      sync.Mutex
	key     [32]byte
	entries map[[32]byte]cachedLogin // by SHA-256 of the blob
	max     int

	// Argon2id runs at once are bounded (SetLimit): each takes DefaultSealOptions' 64 MiB,
	// so a flood of wrong passwords could otherwise exhaust the machine's memory.
	slots chan struct{}
	wait  time.Duration
	stats PasswordStats
}

// PasswordStats counts what the cache did.
type PasswordStats struct {
	Hits   uint64 `json:"hits"`   // logins recognized without Argon2id
	Opens  uint64 `json:"opens"`  // Argon2id runs
	Wrong  uint64 `json:"wrong"`  // wrong passwords
	Busy   uint64 `json:"busy"`   // attempts refused: no slot free within the wait
	Queued uint64 `json:"queued"` // attempts that waited for a slot
}

// ErrBusy: every password check slot stayed taken for the whole wait (try again later).
var ErrBusy = errors.New("identity: too many password checks at once; try again later")

// DefaultPasswordSlots and DefaultPasswordWait are the limits a new cache has: one Argon2id
// run at a time (64 MiB); an attempt waits at most 30 s for it (a
// login under load, with the other nodes of a test machine all checking passwords at once).
const (
	DefaultPasswordSlots = 1
	DefaultPasswordWait  = 30 * time.Second
)

// SetLimit bounds the Argon2id runs at once to slots and how long an attempt waits for one.
// Call it before use.
func (c *PasswordCache) SetLimit(slots int, wait time.Duration) {
	c.slots = make(chan struct{}, max(slots, 1))
	c.wait = wait
}

// Stats returns the counters.
func (c *PasswordCache) Stats() PasswordStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

type cachedLogin struct {
	mac     [32]byte
	keys    *Keys
	address string
}

// NewPasswordCache returns a cache holding at most max blobs (a node serves few users);
// rand (crypto/rand if nil) gives its HMAC key.
func NewPasswordCache(rand io.Reader, max int) (*PasswordCache, error) {
	if rand == nil {
		rand = cryptorand.Reader
	}
	c := &PasswordCache{entries: make(map[[32]byte]cachedLogin), max: max}
	if _, err := io.ReadFull(rand, c.key[:]); err != nil {
		return nil, fmt.Errorf("identity: password cache: %w", err)
	}
	c.SetLimit(DefaultPasswordSlots, DefaultPasswordWait)
	return c, nil
}

// Open is OpenPrivate with the cache in front.
func (c *PasswordCache) Open(blob, password []byte) (*Keys, string, error) {
	id := sha256.Sum256(blob)
	m := hmac.New(sha256.New, c.key[:])
	m.Write(id[:])
	m.Write(password)
	var mac [32]byte
	m.Sum(mac[:0])

	c.mu.Lock()
	e, ok := c.entries[id]
	if ok && hmac.Equal(e.mac[:], mac[:]) {
		c.stats.Hits++
		c.mu.Unlock()
		return e.keys, e.address, nil
	}
	c.mu.Unlock()
	select {
	case c.slots <- struct{}{}:
	default:
		c.mu.Lock()
		c.stats.Queued++
		c.mu.Unlock()
		t := time.NewTimer(c.wait)
		select {
		case c.slots <- struct{}{}:
			t.Stop()
		case <-t.C:
			c.mu.Lock()
			c.stats.Busy++
			c.mu.Unlock()
			return nil, "", ErrBusy
		}
	}
	k, addr, err := OpenPrivate(blob, password)
	// The run's 64 MiB are garbage now: collect and return them before the next run starts,
	// or a stream of checks stacks up several runs' worth before the collector catches up.
	debug.FreeOSMemory()
	<-c.slots
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stats.Opens++
	if err != nil {
		if errors.Is(err, ErrWrongPassword) {
			c.stats.Wrong++
		}
		return nil, "", err
	}
	if _, ok := c.entries[id]; !ok && len(c.entries) >= c.max {
		for old := range c.entries { // evict an arbitrary entry; it only costs one slow login
			delete(c.entries, old)
			break
		}
	}
	if c.max > 0 {
		c.entries[id] = cachedLogin{mac: mac, keys: k, address: addr}
	}
	return k, addr, nil
}

// Forget drops blob from the cache (after a password change or a user's removal).
func (c *PasswordCache) Forget(blob []byte) {
	id := sha256.Sum256(blob)
	c.mu.Lock()
	delete(c.entries, id)
	c.mu.Unlock()
}

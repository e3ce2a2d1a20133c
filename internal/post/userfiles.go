package post

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"epost/internal/identity"
	"epost/internal/ids"
)

// Files of a user on their node, under NODEDIR/users/<address>/ (directory 0700, files 0600):
// the private keys sealed under the user's password (identity.SealPrivate, Argon2id) and the
// CA-signed record the daemon publishes when the node runs (PublishRecord).
const (
	UsersDir       = "users"
	FileSealedKeys = "keys.sealed"
	FileRecord     = "record.bin"
)

// ErrUserExists: the node already has this user; a second "user add" would orphan its mail.
var ErrUserExists = errors.New("post: user already exists on this node")

// UserDir is the directory of address on the node in nodeDir.
func UserDir(nodeDir, address string) string {
	return filepath.Join(nodeDir, UsersDir, address)
}

// SaveUser writes a new user's sealed keys and record. It refuses to replace an existing user.
func SaveUser(nodeDir, address string, sealed []byte, rec identity.SignedRecord) error {
	dir := UserDir(nodeDir, address)
	if _, err := os.Stat(filepath.Join(dir, FileSealedKeys)); err == nil {
		return fmt.Errorf("%w: %s", ErrUserExists, dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("post: user dir: %w", err)
	}
	// Record first: a directory with keys is a complete user.
	if err := writeFileSync(filepath.Join(dir, FileRecord), rec.Encode()); err != nil {
		return err
	}
	return writeFileSync(filepath.Join(dir, FileSealedKeys), sealed)
}

func writeFileSync(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("post: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("post: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("post: sync %s: %w", path, err)
	}
	return f.Close()
}

// StoredUser is a user directory as found on disk, before the password opens the keys.
type StoredUser struct {
	Address string
	Sealed  []byte
	Record  identity.SignedRecord
}

// ListUsers reads every user directory of the node in nodeDir (none: an empty list).
func ListUsers(nodeDir string) ([]StoredUser, error) {
	ents, err := os.ReadDir(filepath.Join(nodeDir, UsersDir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("post: list users: %w", err)
	}
	var out []StoredUser
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		u, err := LoadStoredUser(nodeDir, e.Name())
		if err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return out, nil
}

// LoadStoredUser reads one user directory.
func LoadStoredUser(nodeDir, address string) (StoredUser, error) {
	dir := UserDir(nodeDir, address)
	sealed, err := os.ReadFile(filepath.Join(dir, FileSealedKeys))
	if err != nil {
		return StoredUser{}, fmt.Errorf("post: user %s: %w", address, err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, FileRecord))
	if err != nil {
		return StoredUser{}, fmt.Errorf("post: user %s: %w", address, err)
	}
	rec, err := identity.DecodeSignedRecord(raw)
	if err != nil {
		return StoredUser{}, fmt.Errorf("post: user %s record: %w", address, err)
	}
	return StoredUser{Address: address, Sealed: sealed, Record: rec}, nil
}

// CA side of "user add": the ring CA checks a signing request and signs the record. The
// issuance log (RINGDIR/users.jsonl) makes serials unique and increasing, so a re-issued
// record for an address (new keys) has a higher serial and replaces the old one in the ring.

// FileUserLog is the CA's log of issued user records, in the ring directory.
const FileUserLog = "users.jsonl"

// IssuedUser is one line of the user issuance log.
type IssuedUser struct {
	Serial    uint64    `json:"serial"`
	Address   string    `json:"address"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
}

// IssueRecord verifies req (proof of possession, ring, domain) and signs a record valid from
// now for validity, recording it in ringDir's issuance log. domainOK says whether the ring
// serves the address's domain (ring.Descriptor.HasDomain).
func IssueRecord(ringDir string, caKey ed25519.PrivateKey, ringID ids.RingID, domainOK func(string) bool, req identity.SignedRequest, now time.Time, validity time.Duration) (identity.SignedRecord, *identity.Record, error) {
	r, err := req.Verify()
	if err != nil {
		return identity.SignedRecord{}, nil, err
	}
	if r.Ring != ringID {
		return identity.SignedRecord{}, nil, fmt.Errorf("post: request is for ring %s, this CA signs for %s", r.Ring.Short(), ringID.Short())
	}
	domain := r.Address[strings.LastIndexByte(r.Address, '@')+1:]
	if !domainOK(domain) {
		return identity.SignedRecord{}, nil, fmt.Errorf("post: domain %q is not one of this ring's domains; add users of the ring's domains only", domain)
	}
	if validity <= 0 {
		validity = 365 * 24 * time.Hour
	}
	path := filepath.Join(ringDir, FileUserLog)
	var last uint64
	if data, err := os.ReadFile(path); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			var u IssuedUser
			if json.Unmarshal(sc.Bytes(), &u) == nil && u.Serial > last {
				last = u.Serial
			}
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return identity.SignedRecord{}, nil, fmt.Errorf("post: read %s: %w", path, err)
	}
	nb := now.Truncate(time.Second)
	rec := r.Record(last+1, nb, nb.Add(validity))
	sr, err := identity.SignRecord(rec, caKey)
	if err != nil {
		return identity.SignedRecord{}, nil, err
	}
	line, _ := json.Marshal(IssuedUser{Serial: rec.Serial, Address: rec.Address, NotBefore: rec.NotBefore, NotAfter: rec.NotAfter})
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return identity.SignedRecord{}, nil, fmt.Errorf("post: %w", err)
	}
	_, werr := f.Write(append(line, '\n'))
	serr := f.Sync()
	if cerr := f.Close(); werr == nil && serr == nil {
		werr = cerr
	}
	if werr != nil || serr != nil {
		return identity.SignedRecord{}, nil, fmt.Errorf("post: append %s: %v %v", path, werr, serr)
	}
	return sr, &rec, nil
}

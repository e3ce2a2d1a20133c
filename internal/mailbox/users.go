package mailbox

import (
	"crypto/subtle"
	"fmt"
	"sync"
)

// MemoryUsers is an Authenticator over in-memory stores, for tests and demos
// until the node checks passwords against users' key files.
type MemoryUsers struct {
	mu    sync.Mutex
	users map[string]memoryUser
}

type memoryUser struct {
	password string
	store    *Memory
}

// Add creates a user with an empty store and returns the store.
func (u *MemoryUsers) Add(username, password string) *Memory {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.users == nil {
		u.users = make(map[string]memoryUser)
	}
	m := NewMemory(nil)
	u.users[username] = memoryUser{password: password, store: m}
	return m
}

// Authenticate implements Authenticator.
func (u *MemoryUsers) Authenticate(username, password string) (Store, error) {
	u.mu.Lock()
	user, ok := u.users[username]
	u.mu.Unlock()
	if !ok || subtle.ConstantTimeCompare([]byte(user.password), []byte(password)) != 1 {
		return nil, fmt.Errorf("user %q: %w", username, ErrAuthFailed)
	}
	return user.store, nil
}

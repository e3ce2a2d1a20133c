package mailstore

import (
	"context"
	"fmt"

	"epost/internal/identity"
	"epost/internal/mailbox"
	"epost/internal/post"
)

// Service identities: a gateway files inbound internet mail through POST as a sender of its
// own that the ring CA certifies (docs/gateway-design.md §3.3). Its keys open like a user's,
// with a password the gateway keeps in its node directory, and it has a mailbox like any
// user (replies to it land there).

// StartService opens the service identity addr with its password and starts its session,
// as a login would.
func (us *Users) StartService(addr, password string) error {
	_, err := us.Authenticate(addr, password)
	return err
}

// DeliverAs stores raw for the ring users to, each under its notification id, sent by the
// started identity from, and returns once every recipient is accepted (durably stored) or
// refused for good; unknown names the refused ones. A recipient POST could not reach before
// ctx ends makes it an error: the caller's sender retries, and the same ids make the copies
// stored already count once.
func (us *Users) DeliverAs(ctx context.Context, from string, to []string, nids []post.NotificationID, raw []byte) (unknown []string, err error) {
	if int64(len(raw)) > us.cfg.MaxMessageBytes {
		return nil, fmt.Errorf("mailstore: message of %d bytes, at most %d: %w", len(raw), us.cfg.MaxMessageBytes, mailbox.ErrTooBig)
	}
	addr, err := identity.NormalizeAddress(from)
	if err != nil {
		return nil, err
	}
	sess := us.session(addr)
	if sess == nil {
		return nil, fmt.Errorf("mailstore: %s has no running session", addr)
	}
	pieces := [][]byte{raw}
	if len(raw) >= wholeBelow {
		pieces = splitMessage(raw)
	}
	if len(pieces) > post.MaxParts {
		pieces = [][]byte{raw}
	}
	pieces = cloneAll(pieces)
	_, refused, err := us.sendLocal(ctx, sess, addr, append([]string(nil), to...), append([]post.NotificationID(nil), nids...), pieces)
	if err != nil {
		return nil, err
	}
	for _, r := range refused {
		unknown = append(unknown, r.To)
	}
	return unknown, nil
}

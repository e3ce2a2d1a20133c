package daemon

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"

	"epost/internal/multiring"
	"epost/internal/smtpserver"
)

// outboxInterval is how often a node offers its outbox (mail for internet addresses) to its
// ring's gateways.
const outboxInterval = 2 * time.Second

// drainOutbox hands the outbox's messages, one by one, to a gateway of the ring, which
// delivers them by SMTP; a message leaves the outbox once a gateway holds it on disk. Without
// a gateway in the ring they wait, as before.
func (n *Node) drainOutbox(ob *smtpserver.DirOutbox) {
	t := time.NewTicker(outboxInterval)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		ids, err := ob.Pending()
		if err != nil {
			n.setOutboxWaiting(fmt.Sprintf("cannot read the outbox: %v", err))
			continue
		}
		waiting := ""
		for _, id := range ids {
			if why := n.handOutboxEntry(ob, id); why != "" {
				waiting = why
				break // no gateway now: the rest waits for the next round
			}
		}
		n.setOutboxWaiting(waiting)
	}
}

// handOutboxEntry offers one message to a gateway of the ring. It returns "" when the round
// may go on with the next message, else why this one waits (for Status).
func (n *Node) handOutboxEntry(ob *smtpserver.DirOutbox, id string) string {
	link := n.RingLink()
	if link == nil {
		return "the node has not joined its ring yet"
	}
	env, r, err := ob.Open(id)
	if err != nil {
		return ""
	}
	raw, err := io.ReadAll(r)
	r.Close()
	if err != nil {
		return ""
	}
	sum := sha256.Sum256([]byte(id))
	entry := hex.EncodeToString(sum[:16]) // the same for every offer of this message
	done := make(chan error, 1)
	link.HandOffInternet(entry, env.From, env.To, raw, func(err error) { done <- err })
	select {
	case err = <-done:
	case <-n.stop:
		return "the node is stopping"
	}
	if err != nil {
		n.log.Debug("outbox: no gateway took a message yet", "id", id, "err", err)
		if errors.Is(err, multiring.ErrHandOffRefused) {
			return fmt.Sprintf("a gateway refused the next message: %v", err)
		}
		return fmt.Sprintf("no gateway of the ring took the next message: %v", err)
	}
	if err := ob.Remove(id); err != nil {
		n.log.Warn("outbox: cannot remove a message a gateway took", "id", id, "err", err)
		return ""
	}
	n.log.Info("outbox: message handed to a gateway for SMTP delivery", "id", id, "to", len(env.To))
	return ""
}

package daemon

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"time"

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
			continue
		}
		for _, id := range ids {
			if !n.handOutboxEntry(ob, id) {
				break // no gateway now: the rest waits for the next round
			}
		}
	}
}

func (n *Node) handOutboxEntry(ob *smtpserver.DirOutbox, id string) bool {
	link := n.RingLink()
	if link == nil {
		return false
	}
	env, r, err := ob.Open(id)
	if err != nil {
		return true
	}
	raw, err := io.ReadAll(r)
	r.Close()
	if err != nil {
		return true
	}
	sum := sha256.Sum256([]byte(id))
	entry := hex.EncodeToString(sum[:16]) // the same for every offer of this message
	done := make(chan error, 1)
	link.HandOffInternet(entry, env.From, env.To, raw, func(err error) { done <- err })
	select {
	case err = <-done:
	case <-n.stop:
		return false
	}
	if err != nil {
		n.log.Debug("outbox: no gateway took a message yet", "id", id, "err", err)
		return false
	}
	if err := ob.Remove(id); err != nil {
		n.log.Warn("outbox: cannot remove a message a gateway took", "id", id, "err", err)
		return true
	}
	n.log.Info("outbox: message handed to a gateway for SMTP delivery", "id", id, "to", len(env.To))
	return true
}

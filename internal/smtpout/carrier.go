package smtpout

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"epost/internal/mailqueue"
)

// Carrier works a gateway's queue for internet entries: each due entry's pending recipients
// are delivered per destination domain, their states recorded, and the entry finished once no
// recipient is left pending; the sender hears of failed recipients, and of recipients still
// pending after the entry's DelayWarn, through Report.
type Carrier struct {
	Queue *mailqueue.Queue
	D     *Deliverer
	Log   *slog.Logger
	Now   func() time.Time
	// Report, if set, sends the sender a delivery status notification (RFC 3464) for rcpts
	// with action "failed" or "delayed"; body is the queued message. The entry is finished
	// (or marked warned) only once Report returns nil, so a report that could not be sent is
	// tried again at the entry's next turn.
	Report func(ctx context.Context, h mailqueue.Header, rcpts []mailqueue.RcptState, action string, body []byte) error
	busy   sync.Map
}

// RunOnce starts a delivery attempt for every due internet entry not already under way.
func (c *Carrier) RunOnce(ctx context.Context) {
	for _, id := range c.Queue.Due(c.Now()) {
		h, s, err := c.Queue.Get(id)
		if err != nil || h.Kind != mailqueue.KindInternet {
			continue
		}
		if _, loaded := c.busy.LoadOrStore(id, true); loaded {
			continue
		}
		go func() {
			defer c.busy.Delete(id)
			c.attempt(ctx, h, s)
		}()
	}
}

func (c *Carrier) attempt(ctx context.Context, h mailqueue.Header, s mailqueue.Schedule) {
	r, err := c.Queue.Body(h.ID)
	var body []byte
	if err == nil {
		body, err = io.ReadAll(r)
		r.Close()
	}
	if err != nil {
		c.Log.Warn("smtpout: cannot read a queued entry", "entry", h.ID, "err", err)
		_, _ = c.Queue.Attempted(h.ID, nil, err)
		return
	}
	byDomain := map[string][]string{}
	for _, rs := range s.Rcpts {
		if rs.State != mailqueue.Pending {
			continue
		}
		_, dom, _ := strings.Cut(rs.Addr, "@")
		byDomain[strings.ToLower(dom)] = append(byDomain[strings.ToLower(dom)], rs.Addr)
	}
	states := map[string]mailqueue.RcptState{}
	for dom, rcpts := range byDomain {
		res, err := c.D.Deliver(ctx, dom, h.From, rcpts, body)
		if err != nil {
			for _, a := range rcpts {
				states[a] = mailqueue.RcptState{Addr: a, State: mailqueue.Pending, Detail: err.Error()}
			}
			continue
		}
		for _, r := range res {
			st := mailqueue.RcptState{Addr: r.Rcpt, State: mailqueue.Pending, Detail: describe(r)}
			switch {
			case r.Delivered:
				st.State = mailqueue.Delivered
			case r.Permanent:
				st.State = mailqueue.Failed
			}
			states[r.Rcpt] = st
		}
	}
	ns, err := c.Queue.Attempted(h.ID, states, nil)
	if err != nil {
		c.Log.Warn("smtpout: cannot record an attempt", "entry", h.ID, "err", err)
		return
	}
	pending, outcome := ns.Outcome()
	if pending > 0 {
		c.Log.Info("smtpout: delivery to be retried", "entry", h.ID, "pending", pending, "next", ns.Next.Format(time.RFC3339))
		if c.Report != nil && !ns.Warned && !h.DelayWarn.IsZero() && !c.Now().Before(h.DelayWarn) && h.From != "" {
			var late []mailqueue.RcptState
			for _, r := range ns.Rcpts {
				if r.State == mailqueue.Pending {
					late = append(late, r)
				}
			}
			if err := c.Report(ctx, h, late, "delayed", body); err != nil {
				c.Log.Warn("smtpout: cannot send the delay notice yet", "entry", h.ID, "err", err)
				return
			}
			if err := c.Queue.Update(h.ID, func(s *mailqueue.Schedule) { s.Warned = true }); err != nil {
				c.Log.Warn("smtpout: cannot record the delay notice", "entry", h.ID, "err", err)
			}
		}
		return
	}
	if outcome != "delivered" && c.Report != nil && h.From != "" {
		var failed []mailqueue.RcptState
		for _, r := range ns.Rcpts {
			if r.State == mailqueue.Failed {
				failed = append(failed, r)
			}
		}
		if err := c.Report(ctx, h, failed, "failed", body); err != nil {
			c.Log.Warn("smtpout: cannot send the delivery report yet; the entry stays", "entry", h.ID, "err", err)
			return
		}
	}
	if err := c.Queue.Finish(h.ID, outcome); err != nil {
		c.Log.Warn("smtpout: cannot finish an entry", "entry", h.ID, "err", err)
		return
	}
	c.Log.Info("smtpout: entry done", "entry", h.ID, "outcome", outcome)
}

// describe is a result in a line, for the schedule and delivery reports.
func describe(r Result) string {
	switch {
	case r.Delivered:
		return "delivered to " + r.MX
	case r.Code != 0:
		return fmt.Sprintf("%s said %d %s %s", r.MX, r.Code, r.Enhanced, r.Text)
	}
	return r.Text
}

package sim

import (
	"errors"
	"fmt"
	"io"
	"math"
	"time"
)

// FedConfig is the `epost sim federation` experiment (docs/gateway-design.md §12): several
// rings on one simulated network, each clustered around a site of its own (LAN inside, WAN
// between sites), every node running Pastry, PAST, Scribe and POST as in `epost sim mail`, and
// per ring a few gateways that are also members of a simulated global ring (ring id 0, Pastry
// and Scribe over simnet) through which all mail between rings travels. Users send mail inside
// their ring and to other rings while part of the users' nodes is offline, and halfway through
// the sends some gateways of every ring crash for good.
type FedConfig struct {
	Rings        int
	NodesPerRing int
	// RingSizes, if set, gives each ring's node count (its length is the number of rings).
	RingSizes    []int
	Gateways     int     // per ring, counted in its nodes; they host no users
	Users        int     // per ring
	Messages     int     // in all
	Offline      float64 // fraction of the user-hosting nodes offline while messages are sent
	FailGateways int     // gateways per ring that crash for good halfway through the sends
	Inter        float64 // share of messages to a user of another ring
	Seed         uint64

	SendRate     float64       // messages per virtual second, all rings together
	OfflineAfter time.Duration // virtual time between the last send and the offline nodes' return
	Replicas     int
	LeafSet      int
	JoinSpacing  time.Duration
	Tick         time.Duration // pastry tick
	PastTick     time.Duration
	MinBody      int
	MaxBody      int
	Marker       string // put in every body; no store may contain it in the clear
	// SiteRadius is how far (in the unit square of simnet's latency space) a ring's nodes lie
	// from its site: 0.01 puts them within about 3.4 ms of one another, one way (the LAN),
	// while sites are tens to 200 ms apart (the WAN).
	SiteRadius float64

	// The gateways' protocol (federation_gateway.go). The defaults are the daemon's where it
	// has the same timer.
	HandOffTimeout time.Duration // a node waits this long for a gateway's answer (RingLink: 10 s)
	HandOffWait    time.Duration // a gateway holds its answer until the other ring stored it, at most this long (daemon: 5 s)
	RelayTimeout   time.Duration // a gateway waits this long for the other ring's gateway (Relay: 30 s)
	DirTimeout     time.Duration // and this long for an answer about a user record (Directory: 5 s)
	// ReceiptTimeout: every request to a gateway is acknowledged on receipt, apart from its
	// answer; a gateway silent for this long is taken for dead and another one is asked.
	// Gateways also tell each other (and the nodes they answer) which gateways of their ring
	// are alive. NoReceipts turns both off: then a dead gateway is noticed only when
	// HandOffTimeout, RelayTimeout or DirTimeout runs out, and another one is found through
	// the Scribe group alone, as the daemon does today.
	ReceiptTimeout time.Duration
	NoReceipts     bool
	DNSLatency     time.Duration // the fake resolver's answer time
}

// Validate checks the flags and fills defaults.
func (c *FedConfig) Validate() error {
	if len(c.RingSizes) > 0 {
		c.Rings = len(c.RingSizes)
	} else {
		if c.Rings < 1 || c.NodesPerRing < 1 {
			return errors.New("--rings and --nodes-per-ring must be at least 1")
		}
		c.RingSizes = make([]int, c.Rings)
		for i := range c.RingSizes {
			c.RingSizes[i] = c.NodesPerRing
		}
	}
	if c.Gateways < 1 {
		return errors.New("--gateways must be at least 1")
	}
	if c.FailGateways < 0 || c.FailGateways >= c.Gateways {
		return errors.New("--fail-gateways must be at least 0 and below --gateways (a ring needs a gateway left)")
	}
	for i, n := range c.RingSizes {
		if n < c.Gateways+2 {
			return fmt.Errorf("ring %d has %d nodes: it needs at least the %d gateways and two nodes for users", i, n, c.Gateways)
		}
	}
	if c.Users < 2 {
		return errors.New("--users must be at least 2 (per ring)")
	}
	if c.Messages < 0 {
		return errors.New("--messages must not be negative")
	}
	if c.Offline < 0 || c.Offline >= 1 {
		return errors.New("--offline must be a fraction in [0, 1)")
	}
	if c.Inter < 0 || c.Inter > 1 {
		return errors.New("--inter must be a fraction in [0, 1]")
	}
	if c.Rings == 1 {
		c.Inter = 0
	}
	if c.SendRate <= 0 {
		c.SendRate = 100
	}
	if c.OfflineAfter <= 0 {
		c.OfflineAfter = 30 * time.Second
	}
	if c.Replicas == 0 {
		c.Replicas = 3
	}
	if c.LeafSet == 0 {
		c.LeafSet = 24
	}
	if c.JoinSpacing <= 0 {
		c.JoinSpacing = 20 * time.Millisecond
	}
	if c.Tick <= 0 {
		c.Tick = 500 * time.Millisecond
	}
	if c.PastTick <= 0 {
		c.PastTick = 250 * time.Millisecond
	}
	if c.MinBody <= 0 {
		c.MinBody = 512
	}
	if c.MaxBody < c.MinBody {
		c.MaxBody = max(4<<10, c.MinBody)
	}
	if c.Marker == "" {
		c.Marker = "EPOST-SIM-PLAINTEXT-MARKER"
	}
	if c.SiteRadius <= 0 {
		c.SiteRadius = 0.01
	}
	for _, d := range []struct {
		p *time.Duration
		v time.Duration
	}{
		{&c.HandOffTimeout, 10 * time.Second}, {&c.HandOffWait, 5 * time.Second},
		{&c.RelayTimeout, 30 * time.Second}, {&c.DirTimeout, 5 * time.Second},
		{&c.ReceiptTimeout, time.Second}, {&c.DNSLatency, 15 * time.Millisecond},
	} {
		if *d.p <= 0 {
			*d.p = d.v
		}
	}
	if c.HandOffTimeout <= c.HandOffWait {
		return errors.New("a node must wait longer for a gateway's answer than the gateway holds it")
	}
	return nil
}

// FedResult is one phase's summary line.
type FedResult struct {
	Phase  string
	Fields []FedField
}

// FedField is one key=value of a summary line.
type FedField struct {
	Key   string
	Value float64
}

// Get returns the value of key (false if the line has none).
func (r FedResult) Get(key string) (float64, bool) {
	for _, f := range r.Fields {
		if f.Key == key {
			return f.Value, true
		}
	}
	return 0, false
}

func (r *FedResult) add(key string, v float64) { r.Fields = append(r.Fields, FedField{key, v}) }

func (r FedResult) String() string {
	s := "phase=" + r.Phase
	for _, f := range r.Fields {
		if f.Value == math.Trunc(f.Value) && math.Abs(f.Value) < 1e15 {
			s += fmt.Sprintf(" %s=%d", f.Key, int64(f.Value))
		} else {
			s += fmt.Sprintf(" %s=%.1f", f.Key, f.Value)
		}
	}
	return s
}

// RunFederation runs the experiment, writing one summary line per phase to out.
func RunFederation(cfg FedConfig, out io.Writer, progress func(string)) ([]FedResult, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if progress == nil {
		progress = func(string) {}
	}
	f := newFedRun(cfg, progress)
	var results []FedResult
	emit := func(r FedResult) {
		results = append(results, r)
		fmt.Fprintln(out, r.String())
	}
	if err := f.build(); err != nil {
		return results, err
	}
	emit(f.setupResult())
	f.joinGlobal()
	emit(f.admitResult())
	if err := f.addUsers(); err != nil {
		return results, err
	}
	f.takeOffline()
	f.send()
	emit(f.measure("send", func(m *fedMsg) bool { return !m.offline }, f.sendWindow))
	progress(f.tailNote(10))
	if n := f.stats.notAccepted; n > 10 {
		progress(fmt.Sprintf("%d messages not accepted in all (%d while every replica of the recipient's record was offline)", n, f.stats.recordOffline))
	}
	emit(f.failResult())
	f.returnOffline()
	f.drain()
	final := f.measure("final", func(*fedMsg) bool { return true }, f.runWindow())
	f.finalExtras(&final)
	emit(final)
	return results, nil
}

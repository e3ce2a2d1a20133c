package mailstore

import (
	"epost/internal/ids"
)

// LiveKeys lists the content-store locations of every chunk a message in some folder still
// references, deduplicated. PAST leases expire (post.Config.ContentLease), and POST's own
// RefreshLeases only knows the parts of filed notifications in INBOX, not the records this
// package writes (appended, copied and moved messages), so the node must extend these too:
// pass them to the PAST driver's Refresh as often as POST refreshes (RefreshInterval).
// Parts of expunged messages are left out, so their leases lapse and PAST collects them.
func (s *Store) LiveKeys() []ids.Key {
	s.mu.RLock()
	defer s.mu.RUnlock()
	seen := map[ids.Key]bool{}
	var out []ids.Key
	for _, fo := range s.folders {
		for _, m := range fo.f.Msgs {
			for _, sg := range m.Segments {
				if sg.Ref == nil {
					continue
				}
				for _, c := range sg.Ref.Chunks {
					if !seen[c.Location] {
						seen[c.Location] = true
						out = append(out, c.Location)
					}
				}
			}
		}
	}
	return out
}

// Package past is PAST: replicated, leased object storage on top of the Pastry overlay.
//
// An object lives on the k nodes numerically closest to its key (k from the ring descriptor,
// default 3). The package is a state machine in the style of etcd's raft (see STYLE.md): Node
// takes routed and direct messages, leaf-set snapshots and clock ticks, and hands back messages
// to route or send (TakeOutbox) and completed operations (TakeDone). It never opens a socket,
// reads the clock or starts a goroutine; Driver runs it on a pastry.Driver.
//
// What PAST does, and where it follows or departs from the PAST paper (Rowstron & Druschel,
// SOSP 2001) and ePOST:
//
//   - Insert: the client routes a small locate message to the key's root, which answers with
//     the replica set it sees (its k closest among its leaf set); the client then sends the
//     object straight to those k nodes, each of which validates it, writes it durably and only
//     then acknowledges, straight to the client. The insert succeeds once a majority,
//     floor(k/2)+1 of the replica set, has acknowledged (ePOST: "half"; for k = 3 both are 2).
//     PAST routed the whole object to the root instead; we send the bytes once per replica
//     instead of once per hop, and the client counts acknowledgements it received itself rather
//     than trusting the root's count.
//   - Lookup: routed to the key; the root answers if it holds the object, else it names the
//     replica set and the client asks the others in turn. A Forwarder lets any replica on the
//     route answer (PAST without caching). Clients validate what they receive.
//   - Refresh: extends leases on the root, which passes the refresh on to the replica set.
//     Expired objects go to the store's trash and are purged after its grace period.
//   - Maintenance (maintenance.go): on leaf-set changes and periodically each node pulls what it
//     lacks from its neighbours, comparing a count and digest, then a Bloom filter, of the keys
//     it is responsible for; at most MaxKeysPerExchange keys per exchange (ePOST: 1,000).
//   - Deduplicating insert (InsertDedupe): the locate asks the root whether it holds the
//     content object; if so replicas are asked to extend their copy's lease and only those
//     lacking it get the bytes (ePOST looked chunks up before inserting them).
//   - POST's types (types.go): TypeRecord (CA-signed identity records, serial = sequence
//     number, revocation checked on store) and TypePending (sealed notifications, immutable,
//     key bound to recipient and id, payload hash in Aux), which only their recipient can
//     delete (Delete with a DropProof). An Observer hears what a replica stores and drops,
//     so POST can act as the holder of pending notifications.
//   - Validation (object.go) runs at every replica on every write, inserts and maintenance
//     transfers alike: ring, size, content hash, owner signature and no-rollback of sequence
//     numbers (ePOST weakness 3: replicas accepted any overwrite).
//
// What it must never do: acknowledge a write before the Store has it durably, trust anything a
// peer sends (objects, offers, replica sets are all checked or bounded), or panic on peer input.
package past

// Package glacier is Glacier: durability against massive, correlated failure by erasure coding
// (Haeberlen, Mislove & Druschel, NSDI 2005; ePOST's last line of defence behind PAST).
//
// An object (in ePOST an aggregate of small PAST objects, at most 1 MiB here) is cut into n
// fragments of which any m rebuild it (Codec, on github.com/klauspost/reedsolomon; n ≤ 256,
// the limit of its GF(2^8) codes). Fragment i of object key K lives on the node responsible
// for K + i·2^256/n (FragmentKey), so an object's fragments sit on n nodes spread evenly around
// the id circle, which, since node ids are random, are n nodes unrelated by place or network.
// (Only while n ≪ N: in a ring of fewer than about 2n nodes one node holds several fragments
// of each object, and the fragments no longer fail independently.)
//
// The package is a state machine like past and pastry (STYLE.md): Node takes routed and
// direct messages, leaf-set snapshots and clock ticks and returns what to route or send
// (TakeOutbox) and completed operations (TakeDone); it never opens a socket, reads the clock or
// starts a goroutine. Driver runs it on a pastry.Driver; its appmux tag is appmux.TagGlacier.
//
// # Manifests (manifest.go)
//
// Each version of an object has a manifest (format 2): ring, owner public key, name, version,
// expiry, object size and SHA-256, n, m and the root of a Merkle tree over the n fragments
// (merkle.go: leaf i = SHA-256(leaf domain ‖ i ‖ fragment i), inner nodes SHA-256(node domain ‖
// left ‖ right), leaves padded to a power of two with a fixed empty leaf), signed by the owner
// with Ed25519 under a domain separator (ePOST weakness 4: its manifests were not really
// signed). A manifest is about 220 bytes whatever n; format 1 listed all n fragment hashes
// (2 KiB at n = 64), which with small objects made manifests most of what was stored and sent.
// The object key is K = SHA-256(domain ‖ ring ‖ owner ‖ name) (see ObjectKey for why owner-bound
// rather than a content hash). The manifest travels, and is stored, with every fragment and
// that fragment's inclusion proof (ceil(log2 n) sibling hashes: 192 bytes at n = 64), and a
// holder accepts a fragment only if the signature verifies, the ring and n/m are the ring's,
// the lease has not run out, the fragment was routed to K + i·2^256/n and its proof leads from
// it to the manifest's root. Readers, rebuilders and DiskStore.Get check the same. Holders
// keep the highest version; equal versions are idempotent retries.
//
// # Insert and retrieve (node.go)
//
// Insert routes each fragment, with the manifest, to its fragment key; the holder writes it
// durably and only then acknowledges, straight to the inserter. The insert succeeds at
// InsertAcks acknowledgements (default min(n, 3m): 15 of 48, ePOST's figure; at least m+1), and
// keeps collecting and resending until all n are placed or its retries run out; maintenance
// fills any gap. Retrieve routes fetches to m+1 random fragment keys, asks further positions
// for every miss or timeout, checks each fragment against the newest valid manifest bound to K,
// decodes from m and checks the object hash.
//
// # Maintenance (maintenance.go)
//
// The problem: when a node fails, the fragments it held must be rebuilt by the node that
// inherits its positions, but that node does not know what it should hold; and the holders of
// the same object's other fragments are spread around the circle, not in its leaf set.
//
// The observation (Glacier's): every object uses the same offsets. If a node X is responsible
// for the arc A of positions, then for each offset j the nodes covering A + j·2^256/n hold
// fragment i+j of exactly the objects whose fragment i X should hold. So X only ever talks to
// n-1 small groups of peers (about two nodes each), whatever the number of objects.
//
// A round (every SyncInterval, ePOST: hourly, and SyncDelay after a leaf-set change): X builds a
// Bloom filter (10 bits per entry, salted per round) of the (fragment key, version) pairs it
// holds in A and routes a sync request to A.From + j·2^256/n for j = 1..n-1. The receiver
// scans only its fragments in the shifted arc (sorted store, so cost ∝ what it holds there),
// offers X every position in A of an object it holds that the filter lacks, and passes the
// request to its right neighbour when the shifted arc extends beyond its own (at most MaxWalk
// steps). Offset 0 goes to X's two immediate neighbours: after a join, they hand over the
// fragments in X's new arc by plain copy. For each offered position X fetches m fragments
// (from the offerers, then from the object's other positions through the overlay), each
// checked by its proof, decodes, checks the object hash, re-encodes all n fragments, rebuilds
// the Merkle tree, checks that its root is the manifest's and stores the missing fragment with
// its proof from that tree: exactly what the inserter would have sent.
//
// Bounds. Per node and round: n-1 requests of one filter each (10 bits per fragment held in
// the arc: about 1.2 KB for 48/5 at 1,000 nodes × 20,000 objects; measured in
// docs/bench-glacier.md), each passed on at most MaxWalk times; offers capped per peer at max(16, 3·MaxRebuildsPerRound/(n-1)); at most
// MaxRebuildsPerRound (ePOST: 100) re-codings, each reading m fragments, i.e. one object's
// size; hand-off copies are cheap and capped separately. In a steady state offers are empty
// but for the 1% Bloom false positives, which the next round's salt corrects.
//
// Absence is not loss. X computes the arc it rebuilds over its live leaf set plus every node
// it has seen in its leaf set within GoneAfter (default 14 days, ePOST's): positions of a node
// that is merely offline stay that node's, so an evening offline re-codes nothing (and reads
// still work from any m of the others). Once the node has been gone for GoneAfter, its
// positions fall into its neighbours' arcs and are rebuilt. Fragments outside a node's arc are
// kept for DropGrace, long enough for the new owner to copy them.
//
// Leases: each manifest's signed Expiry; holders drop expired fragments (by the manifest they
// hold). The owner extends a lease by renewal (Node.Renew, RenewManifest): it routes only a
// new manifest (same content, higher version, later expiry; about 220 bytes) to each of
// the n fragment keys, not the n fragments. A holder checks it exactly as a store's manifest;
// if it holds a fragment of the same content there under a lower version, it rewrites the
// fragment durably with the new manifest, keeping the data and proof, and then acknowledges (an equal
// version is a retry: OK; a higher one: stale). A holder with nothing of that content there
// answers not-found: maintenance rebuilds the position from the renewed others, and brings a
// holder that missed the renewal to the new version, since its filters compare (key, version):
// a holder offered a newer version of a fragment it holds fetches one fragment for its
// manifest and, if the content is the same, swaps the manifest in (Stats.Refreshed; a changed
// content, i.e. a repack, is re-coded from m). Success and retries are as for an insert.
//
// What the package must never do: acknowledge a fragment before the Store has it durably,
// store a fragment that does not verify against a manifest signed by the owner its key is
// bound to, re-code because of a short absence, or panic on peer input.
package glacier

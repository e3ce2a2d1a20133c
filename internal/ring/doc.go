// Package ring is a ring's identity and trust: the ring CA, the CA-signed ring descriptor (the
// parameters every node of the ring must agree on), the CA-signed revocation list, node
// enrollment, and the check every node applies to every peer (Trust.VerifyPeer, Trust.TLSConfig).
//
// # Enrolling a node when the CA is on another machine
//
// A ring's CA key signs node certificates. It lives only in the ring directory made by
// "epost ring init", ideally on a machine that runs no node at all, and it never travels: a
// running node never has it. A node's private key, in turn, is made on the node and never
// leaves it. Enrollment therefore takes three steps and two files, and only public material and
// the ring's convergence secret cross between the machines.
//
// On the new node's machine, "epost node request --dir NODEDIR --listen HOST:PORT" makes the node
// key (NODEDIR/node.key, mode 0600) and the node configuration, and writes a request file
// (NODEDIR/request.json by default). The request holds the node's public key, the node id
// derived from it (SHA-256 over a domain-separated encoding of the key) and the listen address,
// and is signed with the node key itself, which proves that whoever sends it holds the key.
//
// Carry the request to the CA machine by any means; it holds nothing secret. There,
// "epost ring enroll --dir RINGDIR --request request.json --out response.json" checks the
// signature and the node id, issues a certificate signed by the ring CA that binds the node id
// (as the URI epost://node/<ring id>/<node id>) to the node's key, records it in
// RINGDIR/issued.jsonl, and writes a response bundle: the certificate, the CA certificate, the
// signed ring descriptor, the signed revocation list and the ring's convergence secret.
//
// The response contains the convergence secret, with which the ring's nodes encrypt shared
// content, so carry it back privately (scp, an encrypted USB stick), never by mail or a public
// share, and delete the copies afterwards. On the node, "epost node accept --dir NODEDIR
// --response response.json" checks that the certificate is for this node's key and signed by
// the CA in the bundle, and that the descriptor and revocation list carry the CA's signature,
// then installs everything. The CA certificate itself arrives in the bundle, so compare its
// fingerprint, printed by "node accept", with the one "ring init" printed (or pass
// --ca-fingerprint to have it compared).
//
// When the CA key is on the node's own machine, "epost node init --ring RINGDIR --dir NODEDIR"
// does all three steps at once, without the files in between; it copies nothing secret from
// the ring directory but the convergence secret.
//
// To take a node out of the ring, "epost ring revoke --dir RINGDIR --serial N" (or --node-id)
// adds it to the revocation list and re-signs the list with a higher version; copy the new
// revocations.json to the nodes (peers then refuse the revoked node's handshakes).
//
// # What this package must never do
//
// It never writes the CA key anywhere but the ring directory it was made in, never replaces
// an existing CA or node key, and never trusts a peer's certificate, descriptor or revocation
// list before checking the CA's signature over the exact bytes received.
package ring

package ring

import (
	"testing"
)

// The decoders below read bytes that come from other machines (request and response files,
// descriptors and revocation lists passed between nodes): none may panic, whatever the input.

func FuzzParseRequest(f *testing.F) {
	_, key := newKey(f)
	raw, _ := NewRequest(key, "127.0.0.1:7002", testNow)
	f.Add(raw)
	f.Add([]byte(`{"type":"node-request","body":"e30=","sig":""}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if req, err := ParseRequest(data); err == nil && req.NodeID != NodeIDFromPublicKey(req.PublicKey) {
			t.Fatal("accepted a request whose node id is not its key's")
		}
	})
}

func FuzzVerifyDescriptorAndRevocations(f *testing.F) {
	r := newTestRing(f, "acme")
	f.Add(r.descriptorRaw)
	f.Add(r.Trust.SignedRevocations())
	f.Fuzz(func(t *testing.T, data []byte) {
		VerifyDescriptor(r.Trust.caPub, data)
		VerifyRevocations(r.Trust.caPub, r.Descriptor.RingID, data)
	})
}

func FuzzParseResponse(f *testing.F) {
	r := newTestRing(f, "acme")
	pub, _ := newKey(f)
	resp, err := r.Enroll(&Request{PublicKey: pub, NodeID: NodeIDFromPublicKey(pub), Listen: "127.0.0.1:1"}, Validity{}, testNow)
	if err != nil {
		f.Fatal(err)
	}
	raw, _ := resp.Marshal()
	f.Add(raw)
	f.Fuzz(func(t *testing.T, data []byte) {
		ParseResponse(data)
	})
}

package mailstore

import (
	"encoding/json"
	"errors"

	"epost/internal/mailbox"
)

// The parse cache (ENVELOPE, BODYSTRUCTURE, header size; RFC 3501 section 7.4.2) travels in
// message records and in the local cache as JSON. mailbox.BodyStructure is an interface, so the
// tree is mirrored by one concrete type.

type structureJSON struct {
	Envelope   *mailbox.Envelope `json:"e,omitempty"`
	Body       *bodyJSON         `json:"b,omitempty"`
	HeaderSize int64             `json:"h"`
}

type bodyJSON struct {
	// Multipart when set.
	Children []*bodyJSON           `json:"c,omitempty"`
	MultiExt *mailbox.MultiPartExt `json:"mx,omitempty"`

	Type        string                 `json:"t,omitempty"`
	Subtype     string                 `json:"s,omitempty"`
	Params      map[string]string      `json:"p,omitempty"`
	ID          string                 `json:"id,omitempty"`
	Description string                 `json:"d,omitempty"`
	Encoding    string                 `json:"enc,omitempty"`
	Size        uint32                 `json:"z,omitempty"`
	Text        *mailbox.TextInfo      `json:"tx,omitempty"`
	Ext         *mailbox.SinglePartExt `json:"x,omitempty"`
	Message     *messageJSON           `json:"m,omitempty"`
}

type messageJSON struct {
	Envelope *mailbox.Envelope `json:"e,omitempty"`
	Body     *bodyJSON         `json:"b,omitempty"`
	NumLines int64             `json:"n"`
}

var errStructure = errors.New("mailstore: malformed structure")

func toBodyJSON(bs mailbox.BodyStructure) *bodyJSON {
	switch b := bs.(type) {
	case *mailbox.MultiPart:
		j := &bodyJSON{Subtype: b.Subtype, MultiExt: b.Extended}
		for _, c := range b.Children {
			j.Children = append(j.Children, toBodyJSON(c))
		}
		return j
	case *mailbox.SinglePart:
		j := &bodyJSON{Type: b.Type, Subtype: b.Subtype, Params: b.Params, ID: b.ID, Description: b.Description,
			Encoding: b.Encoding, Size: b.Size, Text: b.Text, Ext: b.Extended}
		if m := b.MessageRFC822; m != nil {
			j.Message = &messageJSON{Envelope: m.Envelope, NumLines: m.NumLines}
			if m.BodyStructure != nil {
				j.Message.Body = toBodyJSON(m.BodyStructure)
			}
		}
		return j
	}
	return nil
}

func fromBodyJSON(j *bodyJSON, depth int) (mailbox.BodyStructure, error) {
	if j == nil || depth > 64 {
		return nil, errStructure
	}
	if len(j.Children) > 0 {
		b := &mailbox.MultiPart{Subtype: j.Subtype, Extended: j.MultiExt}
		for _, c := range j.Children {
			cb, err := fromBodyJSON(c, depth+1)
			if err != nil {
				return nil, err
			}
			b.Children = append(b.Children, cb)
		}
		return b, nil
	}
	b := &mailbox.SinglePart{Type: j.Type, Subtype: j.Subtype, Params: j.Params, ID: j.ID,
		Description: j.Description, Encoding: j.Encoding, Size: j.Size, Text: j.Text, Extended: j.Ext}
	if m := j.Message; m != nil {
		b.MessageRFC822 = &mailbox.MessageRFC822{Envelope: m.Envelope, NumLines: m.NumLines}
		if m.Body != nil {
			inner, err := fromBodyJSON(m.Body, depth+1)
			if err != nil {
				return nil, err
			}
			b.MessageRFC822.BodyStructure = inner
		}
		if b.MessageRFC822.Envelope == nil {
			b.MessageRFC822.Envelope = &mailbox.Envelope{}
		}
	}
	return b, nil
}

// encodeStructure returns the JSON of s ("" for nil).
func encodeStructure(s *mailbox.Structure) []byte {
	if s == nil {
		return nil
	}
	j := structureJSON{Envelope: s.Envelope, HeaderSize: s.HeaderSize}
	if s.BodyStructure != nil {
		j.Body = toBodyJSON(s.BodyStructure)
	}
	b, err := json.Marshal(j)
	if err != nil {
		return nil // the cache is recomputed from the bytes when missing
	}
	return b
}

// decodeStructure parses encodeStructure's output; nil input gives nil.
func decodeStructure(b []byte) (*mailbox.Structure, error) {
	if len(b) == 0 {
		return nil, nil
	}
	var j structureJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, errStructure
	}
	s := &mailbox.Structure{Envelope: j.Envelope, HeaderSize: j.HeaderSize}
	if s.Envelope == nil {
		s.Envelope = &mailbox.Envelope{}
	}
	bs, err := fromBodyJSON(j.Body, 0)
	if err != nil {
		return nil, err
	}
	s.BodyStructure = bs
	return s, nil
}

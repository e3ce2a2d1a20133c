package imapserver

import (
	"bytes"
	"errors"
	"io"
	"slices"

	"epost/internal/mailbox"

	"github.com/emersion/go-imap/v2"
	imapsrv "github.com/emersion/go-imap/v2/imapserver"
)

// Fetch implements imapsrv.Session (RFC 3501 section 6.4.5, RFC 9051
// section 6.4.5, RFC 3516 BINARY).
// ENVELOPE and BODYSTRUCTURE come from the parse cache; BODY[] and its
// partial forms are served straight from the stored bytes.
func (s *session) Fetch(w *imapsrv.FetchWriter, numSet imap.NumSet, options *imap.FetchOptions) error {
	sel := s.sel
	if sel == nil {
		return errNotSelected
	}
	// Reading a body without .PEEK sets \Seen (RFC 3501 section 6.4.5).
	setSeen := false
	if !sel.readOnly {
		for _, bs := range options.BodySection {
			setSeen = setSeen || !bs.Peek
		}
		for _, bs := range options.BinarySection {
			setSeen = setSeen || !bs.Peek
		}
	}
	for _, i := range sel.resolve(numSet) {
		uid := sel.uids[i]
		msg, err := sel.folder.Message(uid)
		if errors.Is(err, mailbox.ErrNoMessage) {
			// Expunged by another session and not yet reported: RFC
			// 9051 section 6.4.5 lets the server omit it.
			continue
		} else if err != nil {
			return storeError(err)
		}
		flagsChanged := false
		if setSeen && !slices.Contains(msg.Flags, imap.FlagSeen) {
			res, err := sel.folder.ChangeFlags([]imap.UID{uid}, mailbox.FlagsAdd, []imap.Flag{imap.FlagSeen}, 0)
			if err != nil {
				return storeError(err)
			}
			if len(res.Changed) == 1 {
				msg.Summary = res.Changed[0]
				sel.own[uid] = msg.ModSeq
				flagsChanged = true
			}
		}
		if err := s.fetchOne(w, uint32(i+1), msg, options, flagsChanged); err != nil {
			return err
		}
	}
	return nil
}

func (s *session) fetchOne(w *imapsrv.FetchWriter, seq uint32, msg *mailbox.Message, options *imap.FetchOptions, flagsChanged bool) error {
	sel := s.sel
	rw := w.CreateMessage(seq)
	defer func() {
		if rw != nil {
			rw.Close()
		}
	}()
	if options.UID {
		rw.WriteUID(msg.UID)
	}
	if options.Flags || flagsChanged {
		rw.WriteFlags(sel.flags(&msg.Summary))
	}
	if options.RFC822Size {
		rw.WriteRFC822Size(msg.Size)
	}
	if options.InternalDate {
		rw.WriteInternalDate(msg.InternalDate)
	}
	st := msg.Structure
	if st == nil {
		st = &mailbox.Structure{Envelope: &imap.Envelope{}}
	}
	if options.Envelope {
		rw.WriteEnvelope(st.Envelope)
	}
	if options.BodyStructure != nil && st.BodyStructure != nil {
		rw.WriteBodyStructure(st.BodyStructure)
	}
	if len(options.BodySection) > 0 || len(options.BinarySection) > 0 || len(options.BinarySectionSize) > 0 {
		content, err := sel.folder.Content(msg.UID)
		if err != nil {
			return storeError(err)
		}
		for _, section := range options.BodySection {
			if err := writeBodySection(rw, section, content, st.HeaderSize); err != nil {
				return err
			}
		}
		for _, section := range options.BinarySection {
			b := imapsrv.ExtractBinarySection(io.NewSectionReader(content, 0, content.Size()), section)
			wc := rw.WriteBinarySection(section, int64(len(b)))
			if _, err := wc.Write(b); err != nil {
				return err
			}
			if err := wc.Close(); err != nil {
				return err
			}
		}
		for _, section := range options.BinarySectionSize {
			n := imapsrv.ExtractBinarySectionSize(io.NewSectionReader(content, 0, content.Size()), section)
			rw.WriteBinarySectionSize(section, n)
		}
	}
	err := rw.Close()
	rw = nil
	return err
}

// writeBodySection writes one BODY[...] item. The whole message, its
// top-level header and its top-level text are byte ranges of the stored
// message, streamed without copying; other sections are extracted by MIME
// parsing.
func writeBodySection(rw *imapsrv.FetchResponseWriter, section *imap.FetchItemBodySection, content mailbox.Content, headerSize int64) error {
	var start, end int64 = 0, content.Size()
	direct := len(section.Part) == 0 && len(section.HeaderFields) == 0 && len(section.HeaderFieldsNot) == 0
	switch {
	case direct && section.Specifier == imap.PartSpecifierNone:
	case direct && section.Specifier == imap.PartSpecifierHeader:
		end = min(headerSize, end)
	case direct && section.Specifier == imap.PartSpecifierText:
		start = min(headerSize, end)
	default:
		b := imapsrv.ExtractBodySection(io.NewSectionReader(content, 0, content.Size()), section)
		wc := rw.WriteBodySection(section, int64(len(b)))
		if _, err := io.Copy(wc, bytes.NewReader(b)); err != nil {
			return err
		}
		return wc.Close()
	}
	// RFC 3501 section 6.4.5: <offset.size> is a byte range of the section;
	// an offset past the end yields an empty string.
	if p := section.Partial; p != nil {
		start = min(start+max(p.Offset, 0), end)
		end = min(start+max(p.Size, 0), end)
	}
	wc := rw.WriteBodySection(section, end-start)
	if _, err := io.Copy(wc, io.NewSectionReader(content, start, end-start)); err != nil {
		return err
	}
	return wc.Close()
}

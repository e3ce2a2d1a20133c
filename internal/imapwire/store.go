package imapwire

// parseStore: STORE SP sequence-set [SP "(" UNCHANGEDSINCE mod-sequence-valzer ")"] SP
// ["+" / "-"] "FLAGS" [".SILENT"] SP (flag-list / flag *(SP flag)) (RFC 9051, RFC 7162 3.1.3).
func (r *Reader) parseStore() *Store {
	a := &Store{}
	r.sp()
	a.Seqs = r.seqSet(true)
	r.sp()
	if r.take('(') {
		for first := true; r.ok() && !r.take(')'); first = false {
			if !first {
				r.sp()
			}
			r.needWord("UNCHANGEDSINCE")
			r.sp()
			v := r.modSeq(true)
			a.UnchangedSince = &v
		}
		r.sp()
	}
	if r.take('+') {
		a.Op = StoreAdd
	} else if r.take('-') {
		a.Op = StoreRemove
	}
	switch {
	case r.takeWord("FLAGS"):
	case r.takeWord("FLAGS.SILENT"):
		a.Silent = true
	default:
		r.syntax("expected FLAGS, +FLAGS or -FLAGS (optionally .SILENT)")
	}
	r.sp()
	if r.peek() == '(' {
		a.Flags = r.flagList()
	} else {
		a.Flags = []string{r.flag(false)}
		for r.ok() && r.take(' ') {
			a.Flags = append(a.Flags, r.flag(false))
		}
	}
	return a
}

package imapwire

import (
	"strings"
	"time"
)

var months = []string{"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"}

// month reads date-month, case-insensitively.
func (r *Reader) month() time.Month {
	if r.err == nil && len(r.line)-r.pos >= 3 {
		for i, m := range months {
			if strings.EqualFold(string(r.line[r.pos:r.pos+3]), m) {
				r.pos += 3
				return time.Month(i + 1)
			}
		}
	}
	r.syntax("expected a month (Jan ... Dec)")
	return 0
}

// digits reads exactly n digits.
func (r *Reader) digits(n int, what string) int {
	v := 0
	for i := 0; i < n; i++ {
		c := r.peek()
		if c < '0' || c > '9' {
			r.syntax("expected %s", what)
			return 0
		}
		v = v*10 + c - '0'
		r.pos++
	}
	return v
}

// date reads date = date-text / DQUOTE date-text DQUOTE, e.g. 1-Feb-1994 (a day, no zone).
func (r *Reader) date() time.Time {
	q := r.take('"')
	day := r.digits(1, "a date like 1-Feb-1994")
	if c := r.peek(); c >= '0' && c <= '9' {
		day = day*10 + r.digits(1, "a day of month")
	}
	r.need('-', "'-' in a date like 1-Feb-1994")
	m := r.month()
	r.need('-', "'-' in a date like 1-Feb-1994")
	y := r.digits(4, "a 4-digit year")
	if q {
		r.need('"', "'\"' closing a date")
	}
	if !r.ok() {
		return time.Time{}
	}
	t := time.Date(y, m, day, 0, 0, 0, 0, time.UTC)
	if t.Day() != day {
		r.syntax("no such day: %d-%s-%d", day, months[m-1], y)
	}
	return t
}

// dateTime reads date-time, e.g. "17-Jul-1996 02:44:25 -0700" (the day may be " 7").
func (r *Reader) dateTime() time.Time {
	r.need('"', "a date-time like \"17-Jul-1996 02:44:25 -0700\"")
	var day int
	if r.take(' ') {
		day = r.digits(1, "a day of month")
	} else {
		// date-day-fixed is 2DIGIT, but some clients send "7-Jul-..." and the meaning is clear.
		day = r.digits(1, "a day of month")
		if c := r.peek(); c >= '0' && c <= '9' {
			day = day*10 + r.digits(1, "a day of month")
		}
	}
	r.need('-', "'-' in a date-time")
	m := r.month()
	r.need('-', "'-' in a date-time")
	y := r.digits(4, "a 4-digit year")
	r.sp()
	hh := r.digits(2, "hours")
	r.need(':', "':' in a time")
	mm := r.digits(2, "minutes")
	r.need(':', "':' in a time")
	ss := r.digits(2, "seconds")
	r.sp()
	sign := 1
	if r.take('-') {
		sign = -1
	} else {
		r.need('+', "a zone like +0200 or -0700")
	}
	zh := r.digits(2, "zone hours")
	zm := r.digits(2, "zone minutes")
	r.need('"', "'\"' closing a date-time")
	if !r.ok() {
		return time.Time{}
	}
	if hh > 23 || mm > 59 || ss > 60 || zm > 59 {
		r.syntax("time or zone out of range")
		return time.Time{}
	}
	off := sign * (zh*3600 + zm*60)
	t := time.Date(y, m, day, hh, mm, ss, 0, time.FixedZone("", off))
	if t.Day() != day {
		r.syntax("no such day: %d-%s-%d", day, months[m-1], y)
	}
	return t
}

// FormatDate formats a date for SEARCH, e.g. 1-Feb-1994.
func FormatDate(t time.Time) string { return t.Format("2-Jan-2006") }

// FormatDateTime formats a date-time with its quotes, e.g. "17-Jul-1996 02:44:25 -0700".
func FormatDateTime(t time.Time) string { return t.Format(`"02-Jan-2006 15:04:05 -0700"`) }

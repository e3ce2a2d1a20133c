package imap_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

const benchFolderSize = 10000

func benchMessage(i int) []byte {
	return []byte(fmt.Sprintf("From: Sender %d <s%d@example.org>\r\nTo: alice@example.org\r\n"+
		"Subject: benchmark message %d\r\nDate: Mon, 02 Jan 2006 15:04:05 -0700\r\n"+
		"Message-ID: <%d@example.org>\r\nContent-Type: text/plain\r\n\r\n%s\r\n",
		i, i, i, i, strings.Repeat("x", 1500)))
}

func benchClient(b *testing.B, s *testServer) *imapclient.Client {
	c, err := imapclient.DialInsecure(s.addr, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	if err := c.Login(testUser, testPassword).Wait(); err != nil {
		b.Fatal(err)
	}
	return c
}

// BenchmarkFetch measures FETCH throughput over loopback with go-imap's
// client on a 10,000-message folder: one FETCH 1:* per iteration.
func BenchmarkFetch(b *testing.B) {
	for _, tc := range []struct {
		name string
		opts *imap.FetchOptions
	}{
		{"headers", &imap.FetchOptions{UID: true, Flags: true, Envelope: true, RFC822Size: true, InternalDate: true}},
		{"body", &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{{Peek: true}}}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			s := start(b, "imapserver", serverConfig{}, false)
			inbox, _ := s.store.Folder("INBOX")
			for i := 0; i < benchFolderSize; i++ {
				if _, err := inbox.Append(benchMessage(i), nil, time.Time{}); err != nil {
					b.Fatal(err)
				}
			}
			c := benchClient(b, s)
			if _, err := c.Select("INBOX", nil).Wait(); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				cmd := c.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, tc.opts)
				n := 0
				for m := cmd.Next(); m != nil; m = cmd.Next() {
					for item := m.Next(); item != nil; item = m.Next() {
						if body, ok := item.(imapclient.FetchItemDataBodySection); ok {
							buf := make([]byte, 4096)
							for {
								if _, err := body.Literal.Read(buf); err != nil {
									break
								}
							}
						}
					}
					n++
				}
				if err := cmd.Close(); err != nil || n != benchFolderSize {
					b.Fatalf("fetched %d: %v", n, err)
				}
			}
			b.ReportMetric(float64(b.N*benchFolderSize)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}

// BenchmarkAppend measures APPEND of ~1.7 KB messages over loopback.
func BenchmarkAppend(b *testing.B) {
	s := start(b, "imapserver", serverConfig{}, false)
	c := benchClient(b, s)
	msg := benchMessage(1)
	b.SetBytes(int64(len(msg)))
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		cmd := c.Append("INBOX", int64(len(msg)), nil)
		cmd.Write(msg)
		cmd.Close()
		if _, err := cmd.Wait(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "appends/s")
}

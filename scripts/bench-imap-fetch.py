#!/usr/bin/env python3
# IMAP APPEND and FETCH throughput on a running `epost demo` ring (POST-backed folders).
# usage: scripts/bench-imap-fetch.py DEMODIR/demo.json COUNT FOLDER
import imaplib, json, time, sys
d = json.load(open(sys.argv[1]))
bob = d["users"][1]
host, port = bob["imap"].split(":")
n = int(sys.argv[2])
m = imaplib.IMAP4(host, int(port))
m.login(bob["address"], bob["password"])
m.create(sys.argv[3])
t0 = time.time()
for i in range(n):
    msg = ("From: alice@demo.example\r\nTo: bob@demo.example\r\nSubject: bench %d\r\nMessage-ID: <b%d@demo.example>\r\n\r\nbody of message %d with some text\r\n" % (i, i, i)).encode()
    typ, _ = m.append(sys.argv[3], None, None, msg)
    if typ != "OK":
        print("append failed", i); break
    if i and i % 1000 == 0:
        print("appended", i, "rate %.0f/s" % (i/(time.time()-t0)), flush=True)
t1 = time.time()
print("append: %d in %.1fs = %.0f/s" % (n, t1-t0, n/(t1-t0)), flush=True)
m.select(sys.argv[3], readonly=True)
for what in ["(UID FLAGS ENVELOPE RFC822.SIZE INTERNALDATE)", "(BODY.PEEK[])"]:
    t2 = time.time()
    typ, data = m.fetch("1:*", what)
    t3 = time.time()
    cnt = sum(1 for x in data if x not in (b")",))
    print("fetch %s: %d messages in %.2fs = %.0f msgs/s" % (what, cnt, t3-t2, cnt/(t3-t2)), flush=True)
m.logout()

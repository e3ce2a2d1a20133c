#!/usr/bin/env python3
# Latency of IMAP writes on a running `epost demo` ring: COUNT APPENDs of a small message to a
# new folder, then COUNT STOREs (+FLAGS \Flagged on one message each), one at a time on one
# connection; prints p50/p90/p99 per command in milliseconds. Every OK means the folder's log
# entry and its new head are on 2 of 3 replicas' disks (and, since the writer records each head
# before sending it, on the user's node's disk).
# usage: scripts/bench-imap-write.py DEMODIR/demo.json COUNT FOLDER
import imaplib, json, time, sys
d = json.load(open(sys.argv[1]))
bob = d["users"][1]
host, port = bob["imap"].split(":")
n = int(sys.argv[2])
folder = sys.argv[3]
m = imaplib.IMAP4(host, int(port))
m.login(bob["address"], bob["password"])
m.create(folder)

def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs)-1, max(0, int(round(q*len(xs)+0.5))-1))]

def report(name, xs):
    print("%s: n=%d p50=%.1fms p90=%.1fms p99=%.1fms mean=%.1fms" % (name, len(xs), pct(xs, .5), pct(xs, .9), pct(xs, .99), sum(xs)/len(xs)), flush=True)

lat = []
for i in range(n):
    msg = ("From: alice@demo.example\r\nTo: bob@demo.example\r\nSubject: write bench %d\r\nMessage-ID: <w%d@demo.example>\r\n\r\nbody %d\r\n" % (i, i, i)).encode()
    t = time.time()
    typ, _ = m.append(folder, None, None, msg)
    lat.append((time.time()-t)*1000)
    if typ != "OK":
        sys.exit("append %d failed" % i)
report("APPEND", lat)
m.select(folder)
lat = []
for i in range(1, n+1):
    t = time.time()
    typ, _ = m.uid("STORE", str(i), "+FLAGS", "(\\Flagged)")
    lat.append((time.time()-t)*1000)
    if typ != "OK":
        sys.exit("store %d failed" % i)
report("STORE", lat)
m.logout()

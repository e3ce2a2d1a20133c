"""IMAP client checks against the epost IMAP server, with imaplib only.

Usage: client.py HOST PORT USER PASSWORD TEST
Exit status 0 and a last line "ok TEST" on success.
"""
import imaplib
import re
import socket
import sys
import threading
import time

# imaplib predates these states for ID and knows no QRESYNC-era commands.
imaplib.Commands["ID"] = ("NONAUTH", "AUTH", "SELECTED")
imaplib.Commands["ENABLE"] = ("AUTH",)

HOST, PORT, USER, PASSWORD, TEST = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]

MULTIPART = (
    b"From: Alice Example <alice@example.org>\r\n"
    b"To: Bob <bob@example.org>, carol@example.org\r\n"
    b"Cc: dave@example.org\r\n"
    b"Subject: Quarterly report\r\n"
    b"Date: Mon, 02 Jan 2006 15:04:05 -0700\r\n"
    b"Message-ID: <report-1@example.org>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=\"outer\"\r\n"
    b"\r\n"
    b"preamble\r\n"
    b"--outer\r\n"
    b"Content-Type: multipart/alternative; boundary=\"alt\"\r\n"
    b"\r\n"
    b"--alt\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"The numbers are in: revenue grew by zebrafish percent.\r\n"
    b"--alt\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"\r\n"
    b"<p>The numbers are in.</p>\r\n"
    b"--alt--\r\n"
    b"--outer\r\n"
    b"Content-Type: application/pdf; name=\"report.pdf\"\r\n"
    b"Content-Disposition: attachment; filename=\"report.pdf\"\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"JVBERi0xLjQKJcfsj6IK\r\n"
    b"--outer\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    b"From: Eve <eve@example.net>\r\n"
    b"To: alice@example.org\r\n"
    b"Subject: Forwarded inner\r\n"
    b"\r\n"
    b"Inner body line\r\n"
    b"--outer--\r\n"
)


def simple(subject, body=b"hello\r\n", extra=b""):
    return (b"From: sender@example.org\r\nTo: " + USER.encode() + b"\r\nSubject: " + subject +
            b"\r\n" + extra + b"\r\n" + body)


def connect():
    c = imaplib.IMAP4(HOST, PORT)
    c.login(USER, PASSWORD)
    return c


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def ok(typ, data, what):
    check(typ == "OK", "%s: %s %r" % (what, typ, data))
    return data


def expect_bad(c, *cmd):
    try:
        typ, data = c._simple_command(*cmd)
    except imaplib.IMAP4.error as e:
        check("BAD" in str(e), "%r: %s" % (cmd, e))
        return
    raise AssertionError("%r accepted: %s %r" % (cmd, typ, data))


def fetch_one(c, uid, items):
    data = ok(*c.uid("FETCH", str(uid), items), "fetch " + items)
    parts = [d for d in data if d is not None]
    return parts


def fresh_folder(c, name):
    c.delete(name)
    ok(*c.create(name), "create " + name)
    ok(*c.select(name), "select " + name)


def append_uid(c, folder, flags, msg):
    # imaplib's append rewrites line ends to CRLF; send the literal as is.
    args = [folder] + ([flags] if flags else [])
    c.literal = msg
    typ, data = c._command_complete("APPEND", c._command("APPEND", *args))
    ok(typ, data, "append")
    m = re.search(rb"APPENDUID (\d+) (\d+)", data[0])
    check(m, "APPENDUID in %r" % data)
    return int(m.group(2))


def t_login_list():
    c = connect()
    caps = tuple(ok(*c.capability(), "capability")[0].decode().upper().split())
    for cap in ("IMAP4REV1", "IMAP4REV2", "IDLE", "MOVE", "UIDPLUS", "SPECIAL-USE", "NAMESPACE", "ESEARCH", "LITERAL+", "ENABLE", "UNSELECT", "LIST-STATUS", "ID"):
        check(cap in caps, "capability %s in %r" % (cap, caps))
    check(any(x.startswith("APPENDLIMIT=") for x in caps), "APPENDLIMIT in %r" % (caps,))
    # The server logs in over loopback, so it offers login (no LOGINDISABLED).
    check("LOGINDISABLED" not in caps, "LOGINDISABLED in %r" % (caps,))
    data = ok(*c.list(), "list")
    text = b"\n".join(data)
    for use, name in ((b"\\Sent", b"Sent"), (b"\\Drafts", b"Drafts"), (b"\\Trash", b"Trash"), (b"\\Junk", b"Junk"), (b"\\Archive", b"Archive")):
        check(re.search(rb"\(.*" + re.escape(use) + rb".*\) \"/\" \"?" + name, text), "special-use %r in %r" % (use, text))
    check(b"INBOX" in text, "INBOX listed")
    ok(*c.namespace(), "namespace")
    c.logout()
    # A wrong password is refused without dropping the server.
    c = imaplib.IMAP4(HOST, PORT)
    try:
        c.login(USER, "wrong")
        raise AssertionError("wrong password accepted")
    except imaplib.IMAP4.error:
        pass
    c.login(USER, PASSWORD)
    c.logout()


def t_id_before_login():
    c = imaplib.IMAP4(HOST, PORT)
    typ, data = c.xatom("ID", '("name" "imaplib" "version" "3")')
    check(typ == "OK", "ID: %s %r" % (typ, data))
    check(any(b"epost" in d for d in c.untagged_responses.get("ID", [])), "server ID %r" % c.untagged_responses)
    # Unknown commands get BAD and the connection lives on.
    try:
        c.xatom("FROBNICATE")
        raise AssertionError("unknown command accepted")
    except imaplib.IMAP4.error as e:
        check("BAD" in str(e) or "Unknown" in str(e), "BAD reply: %s" % e)
    c.login(USER, PASSWORD)
    typ, data = c.xatom("ID", "NIL")
    check(typ == "OK", "ID after login")
    c.logout()


def t_append_fetch():
    c = connect()
    fresh_folder(c, "Reports")
    uid = append_uid(c, "Reports", r"(\Flagged $Important)", MULTIPART)
    ok(*c.select("Reports"), "select")
    parts = fetch_one(c, uid, "(UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE)")
    head = parts[0] if isinstance(parts[0], bytes) else parts[0][0]
    check(b"\\Flagged" in head and b"$Important" in head, "flags in %r" % head)
    check(b"RFC822.SIZE %d" % len(MULTIPART) in head, "size in %r" % head)
    check(b'"Quarterly report"' in head, "subject in envelope %r" % head)
    check(b'("Alice Example" NIL "alice@example.org" NIL)' in head or b'("Alice Example" NIL "alice" "example.org")' in head, "from in envelope %r" % head)
    check(b'"<report-1@example.org>"' in head, "message-id %r" % head)

    parts = fetch_one(c, uid, "(BODYSTRUCTURE)")
    bs = parts[0] if isinstance(parts[0], bytes) else b"".join(p if isinstance(p, bytes) else b"".join(p) for p in parts)
    for needle in (b'("text" "plain" ("charset" "utf-8") NIL NIL "quoted-printable"',
                   b'"alternative"', b'"mixed"', b'"application" "pdf"', b'("attachment" ("filename" "report.pdf"))',
                   b'"message" "rfc822"', b'"Forwarded inner"', b'("text" "html"'):
        check(needle.lower() in bs.lower(), "%r in BODYSTRUCTURE %r" % (needle, bs))

    parts = fetch_one(c, uid, "(BODY.PEEK[HEADER])")
    hdr = parts[0][1]
    check(hdr == MULTIPART[:MULTIPART.index(b"\r\n\r\n") + 4], "header bytes %r" % hdr)
    parts = fetch_one(c, uid, "(BODY.PEEK[]<0.100>)")
    check(parts[0][1] == MULTIPART[:100], "partial 0.100 %r" % (parts[0],))
    check(b"BODY[]<0>" in parts[0][0], "partial origin in %r" % parts[0][0])
    parts = fetch_one(c, uid, "(BODY.PEEK[]<100.50>)")
    check(parts[0][1] == MULTIPART[100:150], "partial 100.50")
    parts = fetch_one(c, uid, "(BODY.PEEK[1.1])")
    check(b"zebrafish" in parts[0][1], "part 1.1 %r" % (parts[0],))
    parts = fetch_one(c, uid, "(BODY.PEEK[3.HEADER])")
    check(b"Subject: Forwarded inner" in parts[0][1], "part 3 header %r" % (parts[0],))
    # PEEK left \Seen alone; BODY[] sets it.
    parts = fetch_one(c, uid, "(FLAGS)")
    check(b"\\Seen" not in parts[0], "seen not set by peek")
    parts = fetch_one(c, uid, "(BODY[])")
    check(parts[0][1] == MULTIPART, "full body byte-exact")
    parts = fetch_one(c, uid, "(FLAGS)")
    check(b"\\Seen" in parts[0], "seen set by BODY[] %r" % parts)
    # EXAMINE is read-only.
    ok(*c.select("Reports", readonly=True), "examine")
    typ, data = c.uid("STORE", str(uid), "+FLAGS", r"(\Deleted)")
    check(typ == "NO", "store in examine refused: %s %r" % (typ, data))
    c.logout()


def t_store_copy_move_expunge():
    c = connect()
    fresh_folder(c, "Work")
    c.delete("Work2")
    ok(*c.create("Work2"), "create Work2")
    uids = [append_uid(c, "Work", None, simple(b"msg %d" % i)) for i in range(5)]
    ok(*c.select("Work"), "select")
    data = ok(*c.uid("STORE", "%d:%d" % (uids[0], uids[1]), "+FLAGS", r"(\Seen $Label1 custom_kw)"), "store")
    check(any(b"$Label1" in d for d in data), "store reply %r" % data)
    data = ok(*c.uid("SEARCH", "KEYWORD", "custom_kw"), "search keyword")
    check(data[0].split() == [str(uids[0]).encode(), str(uids[1]).encode()], "keyword search %r" % data)
    data = ok(*c.uid("SEARCH", "UNSEEN"), "search unseen")
    check(len(data[0].split()) == 3, "unseen %r" % data)
    ok(*c.uid("STORE", str(uids[0]), "-FLAGS", "($Label1)"), "remove kw")
    parts = fetch_one(c, uids[0], "(FLAGS)")
    check(b"$Label1" not in parts[0] and b"custom_kw" in parts[0], "flags after -FLAGS %r" % parts)

    typ, data = c.uid("COPY", "%d" % uids[2], "Work2")
    ok(typ, data, "copy")
    check(c.response("COPYUID")[1][0], "COPYUID after COPY")
    typ, data = c.uid("COPY", "%d" % uids[2], "NoSuchFolder")
    check(typ == "NO" and c.response("TRYCREATE")[1][0] is not None, "TRYCREATE %s %r" % (typ, data))

    typ, data = c.uid("MOVE", "%d" % uids[3], "Work2")
    ok(typ, data, "move")
    check(c.response("COPYUID")[1][0], "COPYUID after MOVE")
    data = ok(*c.uid("SEARCH", "ALL"), "search all")
    check(str(uids[3]).encode() not in data[0].split(), "moved gone %r" % data)

    ok(*c.uid("STORE", str(uids[4]), "+FLAGS.SILENT", r"(\Deleted)"), "delete flag")
    typ, data = c.expunge()
    ok(typ, data, "expunge")
    data = ok(*c.uid("SEARCH", "ALL"), "search all")
    check(data[0].split() == [str(u).encode() for u in uids[:3]], "after expunge %r" % data)
    st = ok(*c.status("Work2", "(MESSAGES UIDNEXT UIDVALIDITY UNSEEN)"), "status")
    check(b"MESSAGES 2" in st[0], "status %r" % st)
    c.logout()


def t_search():
    c = connect()
    fresh_folder(c, "Search")
    u1 = append_uid(c, "Search", None, simple(b"Invoice 42", b"Please pay the invoice for the aardvark.\r\n", b"X-Tag: blue\r\n"))
    u2 = append_uid(c, "Search", r"(\Flagged)", simple(b"Lunch?", b"Shall we eat at noon?\r\n"))
    u3 = append_uid(c, "Search", None, simple(b"=?utf-8?q?Gr=C3=BC=C3=9Fe?=", b"Gr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln\r\n",
                                              b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"))
    ok(*c.select("Search"), "select")
    def s(*crit):
        return [int(x) for x in ok(*c.uid("SEARCH", *crit), "search %r" % (crit,))[0].split()]
    check(s("SUBJECT", "invoice") == [u1], "subject")
    check(s("BODY", "aardvark") == [u1], "body")
    check(s("TEXT", "noon") == [u2], "text")
    check(s("FLAGGED") == [u2], "flagged")
    check(s("HEADER", "X-Tag", "blue") == [u1], "header")
    check(s("FROM", "sender@example.org") == [u1, u2, u3], "from")
    check(s("NOT", "FLAGGED") == [u1, u3], "not")
    check(s("OR", "SUBJECT", "lunch", "BODY", "aardvark") == [u1, u2], "or")
    c.literal = "Grüße".encode()
    typ, data = c.uid("SEARCH", "CHARSET", "UTF-8", "SUBJECT")
    check(typ == "OK" and [int(x) for x in data[0].split()] == [u3], "utf-8 subject search %s %r" % (typ, data))
    c.literal = "köln".encode()
    typ, data = c.uid("SEARCH", "CHARSET", "UTF-8", "BODY")
    check(typ == "OK" and [int(x) for x in data[0].split()] == [u3], "utf-8 body search %s %r" % (typ, data))
    c.logout()


def t_utf8_headers():
    c = connect()
    fresh_folder(c, "Intl")
    raw = ("From: =?utf-8?q?J=C3=BCrgen?= <juergen@example.de>\r\nTo: Zoë <zoe@example.fr>\r\n"
           "Subject: Grüße aus Köln\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHallo Zoë\r\n").encode("utf-8")
    uid = append_uid(c, "Intl", None, raw)
    ok(*c.select("Intl"), "select")
    parts = fetch_one(c, uid, "(ENVELOPE BODY.PEEK[])")
    flat = b"".join(p if isinstance(p, bytes) else b"".join(p) for p in parts)
    check("Grüße aus Köln".encode() in flat, "raw utf-8 subject in envelope %r" % flat)
    check(raw in flat, "body byte-exact")
    c.logout()


def t_big_attachment():
    import base64, os
    c = connect()
    fresh_folder(c, "Big")
    blob = os.urandom(20 * 1024 * 1024)
    b64 = base64.encodebytes(blob).replace(b"\n", b"\r\n")
    raw = (b"From: a@example.org\r\nSubject: big\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
           b"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n" + b64 + b"--b--\r\n")
    check(len(raw) > 20 * 1024 * 1024, "message over 20 MB")
    t0 = time.time()
    uid = append_uid(c, "Big", None, raw)
    ok(*c.select("Big"), "select")
    parts = fetch_one(c, uid, "(RFC822.SIZE BODY.PEEK[])")
    check(parts[0][1] == raw, "20 MB byte-exact round trip")
    parts = fetch_one(c, uid, "(BODY.PEEK[2])")
    check(base64.decodebytes(parts[0][1]) == blob, "attachment part decodes to the original")
    print("big round trip %.2fs" % (time.time() - t0))
    c.logout()


def t_malformed():
    c = connect()
    fresh_folder(c, "Broken")
    samples = [
        b"no header separator at all, just text",
        b"Subject: unterminated multipart\r\nContent-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\nContent-Type: text/plain\r\n\r\ntruncated",
        b"Content-Type: multipart/mixed\r\n\r\nmultipart without boundary\r\n",
        b"Subject: =?bogus?x?\xff\xfe?=\r\nFrom: <<<@@@>>>\r\nDate: yesterday-ish\r\n\r\n\x00\x01\xff binary \r\n",
        b"Content-Type: message/rfc822\r\n\r\nContent-Type: multipart/alternative; boundary=q\r\n\r\n--q\r\n",
        b"\r\n",
        b"Bare-LF: yes\nSubject: lf only\n\nbody\n",
    ]
    uids = [append_uid(c, "Broken", None, m) for m in samples]
    ok(*c.select("Broken"), "select")
    for uid, m in zip(uids, samples):
        parts = fetch_one(c, uid, "(ENVELOPE BODYSTRUCTURE RFC822.SIZE BODY.PEEK[])")
        body = [p for p in parts if isinstance(p, tuple) and b"BODY[]" in p[0]]
        check(body and body[-1][1] == m, "malformed message %d byte-exact: %r" % (uid, parts))
    ok(*c.uid("SEARCH", "TEXT", "binary"), "search over malformed")
    c.logout()


def t_idle():
    c = connect()
    fresh_folder(c, "Watched")
    ok(*c.select("Watched"), "select")
    tag = c._new_tag().decode()
    c.send(("%s IDLE\r\n" % tag).encode())
    line = c.readline()
    check(line.startswith(b"+"), "idle continuation %r" % line)
    delay = {}

    def deliver():
        time.sleep(0.2)
        d = connect()
        delay["t0"] = time.time()
        d.append("Watched", None, None, simple(b"wake up"))
        d.logout()

    th = threading.Thread(target=deliver)
    th.start()
    c.sock.settimeout(3)
    line = c.readline()
    woke = time.time()
    th.join()
    check(re.match(rb"\* 1 EXISTS", line), "EXISTS during IDLE, got %r" % line)
    lag = woke - delay["t0"]
    check(lag < 1.0, "IDLE woke after %.3fs" % lag)
    c.send(b"DONE\r\n")
    while True:
        line = c.readline()
        if line.startswith(tag.encode()):
            check(b"OK" in line, "idle done %r" % line)
            break
    print("idle wake-up %.1f ms" % (lag * 1000))
    c.sock.settimeout(None)
    c.logout()


def t_no_condstore():
    # CONDSTORE and QRESYNC (RFC 7162) are not offered: the protocol engine
    # (go-imap v2.0.0-beta.8) cannot parse or answer them. The server must
    # then neither advertise nor enable them, and refuse their syntax.
    c = connect()
    caps = tuple(ok(*c.capability(), "capability")[0].decode().upper().split())
    for cap in ("CONDSTORE", "QRESYNC"):
        check(cap not in caps, "%s advertised in %r" % (cap, caps))
    c.delete("Sync")
    ok(*c.create("Sync"), "create")
    uid = append_uid(c, "Sync", None, simple(b"modseq"))
    typ, data = c._simple_command("ENABLE", "CONDSTORE", "QRESYNC")
    ok(typ, data, "enable")
    check(c.untagged_responses.get("ENABLED") == [b""], "nothing enabled %r" % c.untagged_responses)
    expect_bad(c, "SELECT", "Sync", "(CONDSTORE)")
    ok(*c.select("Sync"), "select")
    check(not any(b"HIGHESTMODSEQ" in x for x in c.untagged_responses.get("OK", [])), "no HIGHESTMODSEQ %r" % c.untagged_responses)
    expect_bad(c, "UID", "FETCH", str(uid), "(FLAGS MODSEQ)")
    expect_bad(c, "UID", "STORE", str(uid), "(UNCHANGEDSINCE 1)", "+FLAGS", r"(\Seen)")
    # The session goes on normally.
    parts = fetch_one(c, uid, "(FLAGS)")
    check(b"\\Seen" not in parts[0], "flags untouched %r" % parts)
    c.logout()


def t_recent():
    c = connect()
    fresh_folder(c, "Fresh")
    c.close()
    d = connect()
    d.append("Fresh", None, None, simple(b"new one"))
    d.logout()
    typ, data = c.select("Fresh")
    check(c.untagged_responses.get("RECENT") == [b"1"], "RECENT 1 %r" % c.untagged_responses)
    data = ok(*c.search(None, "RECENT"), "search recent")
    check(data[0] == b"1", "recent search %r" % data)
    # A second session does not see it as recent (RFC 3501 section 2.3.2).
    e = connect()
    e.select("Fresh")
    check(e.untagged_responses.get("RECENT") == [b"0"], "RECENT 0 in second session %r" % e.untagged_responses)
    e.logout()
    c.logout()


def t_extensions():
    """AUTHENTICATE PLAIN (RFC 4616), ENABLE IMAP4rev2, LIST-STATUS (RFC 5819), ESEARCH
    (RFC 4731), UNSELECT (RFC 3691) and LITERAL+ (RFC 7888), each as a client sends it."""
    c = imaplib.IMAP4(HOST, PORT)
    ok(*c.authenticate("PLAIN", lambda _: ("\0%s\0%s" % (USER, PASSWORD)).encode()), "authenticate plain")
    fresh_folder(c, "Ext")
    for i in range(3):
        append_uid(c, "Ext", r"(\Seen)" if i == 0 else None, simple(b"ext %d" % i))
    typ, data = c._simple_command("LIST", '""', '"Ext"', "RETURN", "(STATUS (MESSAGES UNSEEN))")
    ok(typ, data, "list-status")
    st = b" ".join(x for x in c.untagged_responses.pop("STATUS", []) if x)
    check(re.search(rb"MESSAGES 3", st) and re.search(rb"UNSEEN 2", st), "LIST-STATUS gave %r" % st)
    ok(*c.select("Ext"), "select Ext")
    typ, data = c._simple_command("UID", "SEARCH", "RETURN", "(MIN MAX COUNT)", "ALL")
    ok(typ, data, "esearch")
    es = b" ".join(x for x in c.untagged_responses.pop("ESEARCH", []) if x)
    check(re.search(rb"COUNT 3", es) and re.search(rb"MIN \d+", es) and re.search(rb"MAX \d+", es), "ESEARCH gave %r" % es)
    typ, data = c._simple_command("UNSELECT")
    ok(typ, data, "unselect")
    check(c.state == "SELECTED", "imaplib tracks state itself")
    c.state = "AUTH"
    # After UNSELECT no mailbox is selected: FETCH must be refused, the session kept.
    typ, data = c._simple_command("NOOP")
    ok(typ, data, "noop after unselect")
    # LITERAL+: a non-synchronizing literal in APPEND, sent without waiting for "+".
    msg = simple(b"literal plus")
    tag = c._new_tag()
    c.send(tag + b" APPEND Ext {" + str(len(msg)).encode() + b"+}\r\n" + msg + b"\r\n")
    while True:
        line = c._get_line()
        if line.startswith(tag):
            check(b" OK" in line, "LITERAL+ append: %r" % line)
            break
    ok(*c._simple_command("ENABLE", "IMAP4rev2"), "enable imap4rev2")
    c.logout()


def untagged_all(c, name):
    """Pops and joins the untagged responses of one kind imaplib collected."""
    return [x for x in c.untagged_responses.pop(name, []) if x]


def t_condstore_resync():
    """A client caching a folder (as Thunderbird does with CONDSTORE, RFC 7162 section 3.1):
    it remembers HIGHESTMODSEQ, another session changes flags meanwhile, and a FETCH
    CHANGEDSINCE returns just the changed message, with its MODSEQ."""
    c = connect()
    fresh_folder(c, "Cond")
    uids = [append_uid(c, "Cond", None, simple(b"cond %d" % i)) for i in range(4)]
    c.close()
    ok(*c._simple_command("ENABLE", "CONDSTORE"), "enable condstore")
    c.untagged_responses.clear()
    typ, data = c._simple_command("SELECT", "Cond", "(CONDSTORE)")
    ok(typ, data, "select condstore")
    c.state = "SELECTED"  # imaplib tracks state only for its own select()
    hm = untagged_all(c, "HIGHESTMODSEQ")
    check(hm, "SELECT (CONDSTORE) gave no HIGHESTMODSEQ: %r" % c.untagged_responses)
    modseq = int(hm[0])
    other = connect()
    ok(*other.select("Cond"), "other select")
    ok(*other.uid("STORE", str(uids[2]), "+FLAGS", r"(\Flagged)"), "other store")
    other.logout()
    typ, data = c._simple_command("UID", "FETCH", "1:*", "(FLAGS)", "(CHANGEDSINCE %d)" % modseq)
    ok(typ, data, "fetch changedsince")
    got = b" ".join(x if isinstance(x, bytes) else b"".join(x) for x in untagged_all(c, "FETCH"))
    check(re.search(rb"UID %d\b" % uids[2], got) and b"\\Flagged" in got and b"MODSEQ" in got,
          "CHANGEDSINCE gave %r" % got)
    for u in (uids[0], uids[1], uids[3]):
        check(not re.search(rb"UID %d\b" % u, got), "CHANGEDSINCE listed unchanged UID %d: %r" % (u, got))
    c.logout()


def t_qresync_reconnect():
    """QRESYNC (RFC 7162 section 3.2.5): a client that knew the folder reconnects and selects
    it with its UIDVALIDITY, HIGHESTMODSEQ and known UIDs; the server tells it which UIDs
    vanished (VANISHED (EARLIER)), which flags changed, and the new messages, in one SELECT."""
    c = connect()
    fresh_folder(c, "Qr")
    uids = [append_uid(c, "Qr", None, simple(b"qr %d" % i)) for i in range(5)]
    c.close()
    ok(*c._simple_command("ENABLE", "QRESYNC"), "enable qresync")
    c.untagged_responses.clear()
    ok(*c._simple_command("SELECT", "Qr", "(CONDSTORE)"), "select")
    validity = int(untagged_all(c, "UIDVALIDITY")[0])
    modseq = int(untagged_all(c, "HIGHESTMODSEQ")[0])
    c.logout()
    # Meanwhile, on the phone: one message deleted, one flagged, one new.
    other = connect()
    ok(*other.select("Qr"), "other select")
    ok(*other.uid("STORE", str(uids[1]), "+FLAGS", r"(\Deleted)"), "other delete")
    ok(*other.expunge(), "other expunge")
    ok(*other.uid("STORE", str(uids[3]), "+FLAGS", r"(\Seen)"), "other seen")
    new = append_uid(other, "Qr", None, simple(b"qr new"))
    other.logout()
    c = connect()
    ok(*c._simple_command("ENABLE", "QRESYNC"), "enable qresync again")
    c.untagged_responses.clear()
    known = "%d:%d" % (uids[0], uids[-1])
    typ, data = c._simple_command("SELECT", "Qr", "(QRESYNC (%d %d %s))" % (validity, modseq, known))
    ok(typ, data, "select qresync")
    c.state = "SELECTED"
    vanished = b" ".join(untagged_all(c, "VANISHED"))
    check(re.search(rb"\(EARLIER\) .*\b%d\b" % uids[1], vanished) or
          re.search(rb"\(EARLIER\) %d\b" % uids[1], vanished), "VANISHED (EARLIER) gave %r" % vanished)
    got = b" ".join(x if isinstance(x, bytes) else b"".join(x) for x in untagged_all(c, "FETCH"))
    check(re.search(rb"UID %d\b" % uids[3], got) and b"\\Seen" in got, "changed flags not sent: %r" % got)
    exists = untagged_all(c, "EXISTS")
    check(exists and int(exists[-1]) == 5, "EXISTS %r, want 5" % exists)
    typ, data = c.uid("SEARCH", None, "ALL")
    ok(typ, data, "search")
    have = [int(x) for x in data[0].split()]
    check(have == [uids[0], uids[2], uids[3], uids[4], new], "UIDs after resync %r" % have)
    c.logout()


def t_sort_thread():
    """SORT (RFC 5256) by date, subject and from, REVERSE, and THREAD=REFERENCES, as a client
    showing a threaded, sorted message list asks them."""
    c = connect()
    fresh_folder(c, "Sorted")
    msgs = [
        (b"Mon, 03 Jan 2022 10:00:00 +0000", b"Zeta", b"carol@example.org", b"<a@x>", b""),
        (b"Sat, 01 Jan 2022 10:00:00 +0000", b"Re: Alpha", b"bob@example.org", b"<b@x>", b"In-Reply-To: <c@x>\r\nReferences: <c@x>\r\n"),
        (b"Fri, 31 Dec 2021 10:00:00 +0000", b"Alpha", b"alice@example.org", b"<c@x>", b""),
        (b"Sun, 02 Jan 2022 10:00:00 +0000", b"Re: Re: Alpha", b"dave@example.org", b"<d@x>", b"References: <c@x> <b@x>\r\n"),
    ]
    uids = []
    for date, subj, frm, mid, extra in msgs:
        raw = (b"From: " + frm + b"\r\nTo: " + USER.encode() + b"\r\nSubject: " + subj + b"\r\nDate: " + date +
               b"\r\nMessage-ID: " + mid + b"\r\n" + extra + b"\r\nbody\r\n")
        uids.append(append_uid(c, "Sorted", None, raw))
    ok(*c.select("Sorted"), "select")

    def sort(*keys):
        typ, data = c.uid("SORT", "(%s)" % " ".join(keys), "UTF-8", "ALL")
        ok(typ, data, "sort " + " ".join(keys))
        return [int(x) for x in data[0].split()]
    by_date = sort("DATE")
    check(by_date == [uids[2], uids[1], uids[3], uids[0]], "SORT (DATE) %r" % by_date)
    check(sort("REVERSE", "DATE") == by_date[::-1], "SORT (REVERSE DATE)")
    # Base subjects (RFC 5256 section 2.1): the three "Alpha" messages tie, then by sequence.
    by_subject = sort("SUBJECT")
    check(by_subject == [uids[1], uids[2], uids[3], uids[0]], "SORT (SUBJECT) %r" % by_subject)
    by_from = sort("FROM")
    check(by_from == [uids[2], uids[1], uids[0], uids[3]], "SORT (FROM) %r" % by_from)
    typ, data = c.uid("THREAD", "REFERENCES", "UTF-8", "ALL")
    ok(typ, data, "thread references")
    th = data[0].decode()
    want = "(%d %d %d)(%d)" % (uids[2], uids[1], uids[3], uids[0])
    check(th.replace(" (", "(") == want or th == want, "THREAD=REFERENCES %r, want %r" % (th, want))
    c.logout()


TESTS = {name[2:]: fn for name, fn in globals().items() if name.startswith("t_")}

if __name__ == "__main__":
    TESTS[TEST]()
    print("ok", TEST)

"""Checks of the ePOST SMTP submission and POP3 servers with Python's
smtplib and poplib (standard library only).

Usage: EPOST_TEST='{json}' python3 clients.py CHECK
Prints "ok CHECK" on success; raises (non-zero exit) on failure.
"""
import email.policy
import json
import os
import poplib
import random
import smtplib
import ssl
import sys
import time
from email.message import EmailMessage

CFG = json.loads(os.environ["EPOST_TEST"])
ALICE, BOB, PW = CFG["alice"], CFG["bob"], CFG["password"]


def hostport(key):
    host, port = CFG[key].rsplit(":", 1)
    return host, int(port)


def tls_ctx():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # self-signed test certificate
    return ctx


def smtp(key="smtp"):
    s = smtplib.SMTP(*hostport(key), timeout=30)
    s.ehlo("client.example")
    return s


def pop(user=BOB, key="pop3"):
    # A session dropped a moment ago may still hold the maildrop lock until
    # the server notices; [IN-USE] (RFC 2449 section 8.1.1) says try again.
    for attempt in range(50):
        p = poplib.POP3(*hostport(key), timeout=30)
        p.user(user)
        try:
            p.pass_(PW)
            return p
        except poplib.error_proto as e:
            p.close()
            if b"[IN-USE]" not in e.args[0] or attempt == 49:
                raise
            time.sleep(0.05)


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


def expect_code(fn, code, what):
    try:
        r = fn()
    except smtplib.SMTPResponseException as e:
        expect(e.smtp_code == code, "%s: got %d %r, want %d" % (what, e.smtp_code, e.smtp_error, code))
        return e.smtp_error
    except smtplib.SMTPRecipientsRefused as e:
        (c, msg), = e.recipients.values()
        expect(c == code, "%s: got %d %r, want %d" % (what, c, msg, code))
        return msg
    if isinstance(r, tuple):
        expect(r[0] == code, "%s: got %r, want %d" % (what, r, code))
        return r[1]
    raise AssertionError("%s: no error, want %d" % (what, code))


def crlf(text):
    return text.replace("\n", "\r\n").encode("utf-8")


def retr(p, n):
    _, lines, _ = p.retr(n)
    return b"\r\n".join(lines) + b"\r\n"


def fetch_as(user, sent):
    """Reads the user's INBOX over POP3 and returns the one message that
    ends with sent (the server prepends its Received: field)."""
    p = pop(user)
    try:
        count, _ = p.stat()
        for n in range(1, count + 1):
            got = retr(p, n)
            if got.endswith(sent):
                expect(got.startswith(b"Received: from "), "no Received: field first: %r" % got[:80])
                prefix = got[: len(got) - len(sent)]
                expect(prefix.count(b"\r\n") <= 4 and prefix.endswith(b"\r\n"),
                       "more than a trace field prepended: %r" % prefix)
                return got
        raise AssertionError("message not found in %s's INBOX over POP3 (%d messages)" % (user, count))
    finally:
        p.quit()


def send(raw, to=(BOB,), key="smtp", starttls=False, options=()):
    s = smtp(key)
    if starttls:
        s.starttls(context=tls_ctx())
        s.ehlo("client.example")
    s.login(ALICE, PW)
    refused = s.sendmail(ALICE, list(to), raw, mail_options=list(options))
    expect(not refused, "refused: %r" % refused)
    s.quit()


def simple(subject, body="Hello Bob.\n"):
    return crlf("From: Alice <%s>\nTo: Bob <%s>\nSubject: %s\nMessage-ID: <%s@example.org>\n\n%s"
                % (ALICE, BOB, subject, subject.replace(" ", "."), body))


# --- SMTP ---------------------------------------------------------------

def smtp_auth():
    s = smtp()
    expect(s.has_extn("auth") and "PLAIN" in s.esmtp_features["auth"].split(), "AUTH PLAIN not advertised")
    for ext in ("size", "8bitmime", "smtputf8", "pipelining", "starttls", "enhancedstatuscodes"):
        expect(s.has_extn(ext), "%s not advertised: %r" % (ext, s.esmtp_features))
    expect_code(lambda: s.login(ALICE, "wrong password"), 535, "bad password")
    s.quit()
    s = smtp()
    code, _ = s.login(ALICE, PW)
    expect(code == 235, "login: %d" % code)
    s.quit()
    # AUTH LOGIN as well (the fallback of many clients).
    s = smtp()
    s.user, s.password = ALICE, PW
    code, _ = s.auth("LOGIN", s.auth_login, initial_response_ok=False)
    expect(code == 235, "AUTH LOGIN: %d" % code)
    s.quit()


def smtp_auth_required():
    s = smtp()
    msg = expect_code(lambda: s.mail(ALICE), 530, "MAIL before AUTH")
    expect(b"AUTH" in msg, "530 text: %r" % msg)
    s.quit()


def smtp_from_mismatch():
    s = smtp()
    s.login(ALICE, PW)
    msg = expect_code(lambda: s.mail(BOB), 553, "MAIL FROM someone else")
    expect(b"logged in as" in msg, "553 text: %r" % msg)
    expect_code(lambda: s.mail(""), 553, "MAIL FROM:<>")
    # The right address still works on the same connection.
    code, _ = s.mail(ALICE.upper())
    expect(code == 250, "MAIL FROM own address upper-cased: %d" % code)
    s.quit()


def smtp_unknown_rcpt():
    s = smtp()
    s.login(ALICE, PW)
    s.mail(ALICE)
    msg = expect_code(lambda: s.rcpt("nosuchuser@example.org"), 550, "unknown ring user")
    expect(b"5.1.1" in msg or b"No such user" in msg, "550 text: %r" % msg)
    code, _ = s.rcpt(BOB)
    expect(code == 250, "RCPT bob after a refused one: %d" % code)
    code, _ = s.data(simple("unknown rcpt"))
    expect(code == 250, "DATA: %d" % code)
    s.quit()


def smtp_outside():
    raw = simple("to the internet")
    send(raw, to=("carol@elsewhere.net", BOB))
    fetch_as(BOB, raw)
    open(os.path.join(CFG["tmp"], "sent.eml"), "wb").write(raw)


def smtp_size():
    s = smtp("smtp_small")
    limit = CFG["small_limit"]
    expect(s.esmtp_features.get("size") == str(limit), "SIZE %r" % s.esmtp_features.get("size"))
    s.login(ALICE, PW)
    # RFC 1870: a declared size over the limit is refused at MAIL.
    expect_code(lambda: s.mail(ALICE, ["SIZE=%d" % (limit + 1)]), 552, "declared SIZE over limit")
    # An undeclared oversized message is refused at the end of DATA, and
    # the connection stays usable.
    s.mail(ALICE)
    s.rcpt(BOB)
    big = simple("too big", "x" * 70 + "\n") * 1
    big = big + (b"y" * 76 + b"\r\n") * (limit // 78 + 10)
    expect_code(lambda: s.data(big), 552, "oversized DATA")
    s.rset()
    s.mail(ALICE)
    s.rcpt(BOB)
    code, _ = s.data(simple("small enough"))
    expect(code == 250, "small DATA after oversized: %d" % code)
    s.quit()


def smtp_starttls():
    raw = simple("over starttls")
    send(raw, starttls=True)
    fetch_as(BOB, raw)
    raw = simple("over implicit tls")
    s = smtplib.SMTP_SSL(*hostport("smtps"), context=tls_ctx(), timeout=30)
    s.login(ALICE, PW)
    s.sendmail(ALICE, [BOB], raw)
    s.quit()
    fetch_as(BOB, raw)


def smtp_pipelining():
    # smtplib does not pipeline, so send MAIL, RCPT, RCPT, DATA in one write.
    import socket
    s = smtp()
    s.login(ALICE, PW)
    sock = s.sock
    raw = simple("pipelined")
    sock.sendall(b"MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nRCPT TO:<nobody@example.org>\r\nDATA\r\n"
                 % (ALICE.encode(), BOB.encode()))
    codes = [s.getreply()[0] for _ in range(4)]
    expect(codes == [250, 250, 550, 354], "pipelined replies %r" % codes)
    sock.sendall(raw + b".\r\n")
    code, _ = s.getreply()
    expect(code == 250, "end of pipelined DATA: %d" % code)
    s.quit()
    fetch_as(BOB, raw)


def big_attachment():
    rnd = random.Random(20)
    blob = rnd.randbytes(20 * 1000 * 1000)
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = ALICE, BOB, "20 MB attachment"
    m.set_content("See the attachment.\n")
    m.add_attachment(blob, maintype="application", subtype="octet-stream", filename="blob.bin")
    raw = m.as_bytes(policy=email.policy.SMTP)
    send(raw)
    got = fetch_as(BOB, raw)
    expect(len(got) > 20 * 1000 * 1000, "short message")


def utf8_headers():
    raw = ("From: Zoë Ålice <%s>\r\nTo: Bob <%s>\r\nSubject: Grüße, 你好, привет 🎉\r\n"
           "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
           "Straße, naïve café.\r\n" % (ALICE, BOB)).encode("utf-8")
    send(raw, options=["SMTPUTF8", "BODY=8BITMIME"])
    fetch_as(BOB, raw)


def malformed_mime():
    raw = (b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: broken\r\n"
           b"Content-Type: multipart/mixed; boundary=\"never-closed\r\n"
           b"this is not a header line\r\n"
           b"MIME-Version: 9.9\r\n\r\n"
           b"--wrong-boundary\r\n"
           b".leading dot\r\n"
           b"..two dots\r\n"
           b".\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\n"
           b"!!!not base64!!!\r\n"
           b"\xff\xfe raw 8-bit bytes \x80\r\n"
           b"trailing spaces   \r\n"
           b"\r\n")
    send(raw)
    fetch_as(BOB, raw)


# --- POP3 ---------------------------------------------------------------

def pop_auth():
    p = poplib.POP3(*hostport("pop3"), timeout=30)
    caps = p.capa()
    for c in ("TOP", "UIDL", "USER", "STLS", "PIPELINING", "RESP-CODES"):
        expect(c in caps, "CAPA lacks %s: %r" % (c, caps))
    p.user(BOB)
    try:
        p.pass_("wrong")
        raise AssertionError("wrong password accepted")
    except poplib.error_proto as e:
        expect(b"[AUTH]" in e.args[0], "PASS error %r" % e.args[0])
    p.user(BOB)
    p.pass_(PW)
    expect(p.stat()[0] == 3, "stat %r" % (p.stat(),))
    p.quit()


def pop_dele_quit():
    p = pop()
    expect(p.stat()[0] == 3, "before: %r" % (p.stat(),))
    uidl = p.uidl()[1]
    p.dele(2)
    try:
        p.retr(2)
        raise AssertionError("RETR of a deleted message worked")
    except poplib.error_proto:
        pass
    expect(p.stat()[0] == 2, "STAT after DELE: %r" % (p.stat(),))
    p.quit()
    p = pop()
    expect(p.stat()[0] == 2, "after QUIT: %r" % (p.stat(),))
    ids = [l.split()[1] for l in p.uidl()[1]]
    expect(ids == [uidl[0].split()[1], uidl[2].split()[1]], "UIDL after expunge: %r vs %r" % (ids, uidl))
    # A session that ends without QUIT deletes nothing (RFC 1939 section 6).
    p.dele(1)
    p.close()
    p = pop()
    expect(p.stat()[0] == 2, "after dropped session: %r" % (p.stat(),))
    p.quit()


def pop_rset():
    p = pop()
    p.dele(1)
    p.dele(3)
    expect(p.stat()[0] == 1, "after DELE: %r" % (p.stat(),))
    p.rset()
    expect(p.stat()[0] == 3, "after RSET: %r" % (p.stat(),))
    p.quit()
    p = pop()
    expect(p.stat()[0] == 3, "after QUIT: %r" % (p.stat(),))
    p.quit()


def pop_top():
    p = pop()
    _, lines, _ = p.top(1, 2)
    expect(lines == [b"From: a@example.org", b"Subject: one", b"", b"line 1", b".line 2"], "TOP 1 2: %r" % lines)
    _, lines, _ = p.top(1, 0)
    expect(lines == [b"From: a@example.org", b"Subject: one", b""], "TOP 1 0: %r" % lines)
    _, lines, _ = p.top(1, 100)
    expect(lines[-1] == b"line 4", "TOP 1 100: %r" % lines)
    p.quit()


def pop_uidl_stable():
    p = pop()
    first = p.uidl()[1]
    one = p.uidl(2)
    p.quit()
    p = pop()
    expect(p.uidl()[1] == first, "UIDL changed between sessions")
    expect(p.uidl(2) == one, "UIDL 2 changed")
    ids = [l.split()[1] for l in first]
    expect(len(set(ids)) == len(ids), "UIDL not unique: %r" % ids)
    p.quit()


def pop_stls():
    p = poplib.POP3(*hostport("pop3"), timeout=30)
    p.stls(context=tls_ctx())
    expect("STLS" not in p.capa(), "STLS still advertised under TLS")
    p.user(BOB)
    p.pass_(PW)
    expect(p.stat()[0] == 3, "stat over STLS")
    p.quit()
    p = poplib.POP3_SSL(*hostport("pop3s"), context=tls_ctx(), timeout=30)
    p.user(BOB)
    p.pass_(PW)
    expect(p.stat()[0] == 3, "stat over implicit TLS")
    p.quit()


if __name__ == "__main__":
    name = sys.argv[1]
    globals()[name]()
    print("ok " + name)

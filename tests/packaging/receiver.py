"""A webhook receiver and a fake Telegram API for tests/packaging/hooks.rs.

Usage: receiver.py SECRET_FILE FAIL_FIRST
Listens on 127.0.0.1 (a free port, printed as "port N"), and answers:
  POST /hook  refract's webhook: the first FAIL_FIRST requests get 503 with
              Retry-After: 1; then the signature is checked (HMAC-SHA256 of
              "ID.TIMESTAMP.BODY" with the secret, constant-time compare),
              the timestamp must be within 300 s, and an id seen before is a
              replay (409). A good delivery gets 200 and is logged as
              "delivered ID BODY"; a bad one 401, logged "rejected WHY".
  POST /bot<token>/sendMessage  the Telegram Bot API's: logs
              "telegram TIME_MS CHAT TEXT" (newlines as \\n) and answers ok.
"""
import hashlib
import hmac
import sys
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

secret = open(sys.argv[1], "rb").readline().strip()
fail_first = int(sys.argv[2])
seen = set()
count = {"n": 0}


def log(line):
    print(line, flush=True)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, code, extra=None):
        self.send_response(code)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path == "/hook":
            count["n"] += 1
            if count["n"] <= fail_first:
                log("busy")
                return self.answer(503, {"Retry-After": "1"})
            hid = self.headers.get("X-Refract-Id", "")
            ts = self.headers.get("X-Refract-Timestamp", "")
            sig = self.headers.get("X-Refract-Signature", "")
            want = "sha256=" + hmac.new(
                secret, b"%s.%s.%s" % (hid.encode(), ts.encode(), body), hashlib.sha256
            ).hexdigest()
            if not hmac.compare_digest(want, sig):
                log("rejected signature")
                return self.answer(401)
            if not ts.isdigit() or abs(time.time() - int(ts)) > 300:
                log("rejected stale")
                return self.answer(401)
            if hid in seen:
                log("rejected replay")
                return self.answer(409)
            seen.add(hid)
            log("delivered %s %s" % (hid, body.decode()))
            return self.answer(200)
        if self.path.endswith("/sendMessage"):
            form = urllib.parse.parse_qs(body.decode())
            text = form.get("text", [""])[0].replace("\n", "\\n")
            log("telegram %d %s %s" % (time.time() * 1000, form.get("chat_id", [""])[0], text))
            return self.answer(200)
        self.answer(404)


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
log("port %d" % server.server_address[1])
server.serve_forever()

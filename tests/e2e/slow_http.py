"""The web server behind the proxy node in tests/e2e/v2ray.rs.

GET /slow/<secs> answers 200 with Content-Length and streams 1000 bytes
every 100 ms for <secs> seconds (a long download whose break the client
notices as a short body).

GET /pause/<before>/<idle>/<after> answers 200 with the Content-Length of
the whole body ((<before> + <after>) * 10 * 1000 bytes), streams like /slow
for <before> seconds, sends nothing for <idle> seconds (the connection stays
open and idle: only TCP keepalive moves on it), then streams like /slow for
<after> seconds (an idle connection that resumes use).

Any other path answers "ok". Prints "ready" once listening.
Usage: slow_http.py ADDRESS PORT
"""
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def stream(self, secs):
        for _ in range(int(secs * 10)):
            self.wfile.write(b"x" * 1000)
            self.wfile.flush()
            time.sleep(0.1)

    def do_GET(self):
        parts = self.path.strip("/").split("/")
        if len(parts) == 2 and parts[0] == "slow":
            secs = float(parts[1])
            self.send_response(200)
            self.send_header("Content-Length", str(int(secs * 10) * 1000))
            self.end_headers()
            self.stream(secs)
        elif len(parts) == 4 and parts[0] == "pause":
            before, idle, after = (float(p) for p in parts[1:])
            length = (int(before * 10) + int(after * 10)) * 1000
            self.send_response(200)
            self.send_header("Content-Length", str(length))
            self.end_headers()
            self.stream(before)
            time.sleep(idle)
            self.stream(after)
        else:
            body = b"ok\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A client cut off mid-download (the point of the test) is no error.
        pass


server = Server((sys.argv[1], int(sys.argv[2])), Handler)
print("ready", flush=True)
server.serve_forever()

#!/usr/bin/env python3
"""An upstream for the token proxy tests: POST answers with the body's length, its SHA-256
and the Authorization it got; GET /big?mb=N streams N MiB. Prints its port on the first line."""
import hashlib
import http.server
import sys
import urllib.parse


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, body):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        digest, length = hashlib.sha256(), 0
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunk = self.rfile.read(size)
                self.rfile.readline()
                digest.update(chunk)
                length += len(chunk)
        else:
            left = int(self.headers.get("Content-Length", "0"))
            while left:
                chunk = self.rfile.read(min(1 << 16, left))
                digest.update(chunk)
                length += len(chunk)
                left -= len(chunk)
        auth = self.headers.get("Authorization", "")
        hop = self.headers.get("X-Hop", "")
        self.reply(f"{length} {digest.hexdigest()} {auth} hop={hop}\n".encode())

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        mib = int(urllib.parse.parse_qs(url.query).get("mb", ["1"])[0])
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(mib << 20))
        self.end_headers()
        block = b"\0" * (1 << 20)
        for _ in range(mib):
            self.wfile.write(block)


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()

#!/usr/bin/env python3
"""A careless upstream for the token proxy's path tests: it serves the files under a directory,
decoding the path first (percent-escapes, up to four times over, `\\` as `/`, `;params`
dropped) and resolving `..` after, as servers that decode before they normalise do. So every
encoded way out of a base path works against it directly. GET …/headers answers with the
names of the request's headers; every answer carries `Proxy-Note`, a header no client should see.
Prints its port on the first line."""
import http.server
import posixpath
import sys
import urllib.parse

ROOT = sys.argv[1].rstrip("/")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body):
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Proxy-Note", "upstream")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path.endswith("/headers"):
            return self.reply(200, "\n".join(k.lower() for k in self.headers.keys()).encode())
        for _ in range(4):
            path = urllib.parse.unquote(path)
        path = path.replace("\\", "/")
        path = "/".join(segment.split(";", 1)[0] for segment in path.split("/"))
        full = posixpath.normpath(ROOT + "/" + path.lstrip("/"))
        if not full.startswith(ROOT + "/"):
            return self.reply(403, b"outside the served directory\n")
        try:
            with open(full, "rb") as f:
                return self.reply(200, f.read())
        except OSError:
            return self.reply(404, b"no such file\n")


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()

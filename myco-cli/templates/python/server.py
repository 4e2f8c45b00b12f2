"""@NAME@: a small HTTP service made by `myco init python`.

It answers GET / with a line of text and GET /healthz with "ok", on the port in the PORT
environment variable (myco.json sets it). Only the standard library is used, so the flake needs
nothing but python3.
"""

import os
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NAME = "@NAME@"


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/":
            self.answer(200, f"hello from {NAME}\n")
        elif self.path == "/healthz":
            self.answer(200, "ok\n")
        else:
            self.answer(404, "not found\n")

    def answer(self, status, text):
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Server(ThreadingHTTPServer):
    """Listens on every address of both families where the box has IPv6, so peers on links that
    carry only IPv6 reach it (`NAME.myco` answers them its IPv6 addresses); else on IPv4's."""

    address_family = socket.AF_INET6 if socket.has_dualstack_ipv6() else socket.AF_INET

    def server_bind(self):
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def main():
    port = os.environ.get("PORT", "")
    if not port.isdigit() or not 0 < int(port) < 65536:
        sys.exit(f"{NAME}: PORT must be a port number (1 to 65535), got {port!r}; set it in myco.json's env")
    everywhere = "::" if Server.address_family == socket.AF_INET6 else ""
    server = Server((everywhere, int(port)), Handler)
    print(f"{NAME}: listening on port {port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()

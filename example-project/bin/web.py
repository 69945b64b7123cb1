#!/usr/bin/env python3
"""The example project's web process: one page that shows what the pillar
configured and what the worker wrote into the data volume.

    web.py CONFIG.json          serve
    web.py --probe CONFIG.json  exit 0 when the server answers (readiness)
"""
import html
import http.server
import json
import os
import signal
import socket
import sys


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def probe(cfg):
    host = "127.0.0.1" if cfg["host"] in ("0.0.0.0", "") else cfg["host"]
    try:
        with socket.create_connection((host, int(cfg["port"])), timeout=1):
            return 0
    except OSError:
        return 1


def read(path, default=""):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return default


def main(argv):
    if len(argv) == 3 and argv[1] == "--probe":
        return probe(load(argv[2]))
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    cfg = load(argv[1])
    data_dir = cfg["data_dir"]

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/health":
                body = b"ok\n"
                ctype = "text/plain"
            else:
                beats = read(os.path.join(data_dir, "heartbeat.log")).splitlines()
                body = (
                    "<!doctype html><title>{name}</title>\n"
                    "<h1>{name}</h1>\n<p>{greeting}</p>\n"
                    "<p>worker heartbeats: {count}; last: {last}</p>\n"
                    "<pre>{welcome}</pre>\n"
                ).format(
                    name=html.escape(cfg["site_name"]),
                    greeting=html.escape(cfg["greeting"]),
                    count=len(beats),
                    last=html.escape(beats[-1] if beats else "none yet"),
                    welcome=html.escape(read(os.path.join(data_dir, "welcome.txt"))),
                ).encode()
                ctype = "text/html; charset=utf-8"
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt, *args):
            print("%s %s" % (self.address_string(), fmt % args), flush=True)

    server = http.server.ThreadingHTTPServer((cfg["host"], int(cfg["port"])), Page)
    # TERM (the launcher's stop signal): finish the request in progress, exit 0.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    # HUP (on_reconfigure: reload): the page's settings are read again; the
    # address stays (a new port takes a restart).
    def reload(*_):
        try:
            cfg.update({k: v for k, v in load(argv[1]).items() if k not in ("host", "port")})
            print("reloaded: serving %r" % cfg["site_name"], flush=True)
        except (OSError, ValueError) as e:
            print("reload failed, keeping the old settings: %s" % e, flush=True)

    signal.signal(signal.SIGHUP, reload)
    print("serving %r on %s:%s" % (cfg["site_name"], cfg["host"], cfg["port"]), flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

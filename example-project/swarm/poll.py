#!/usr/bin/env python3
"""Poll the example's page as a client of a DNS-round-robin service does
(`endpoint_mode: dnsrr`): resolve tasks.SERVICE (Docker's embedded DNS
lists the service's tasks that are healthy and not being stopped) and ask
its addresses in turn.

    poll.py [--port 8080] [--interval 0.02] [--dns-cache 0] SERVICE

--dns-cache SECONDS keeps a DNS answer that long, as a proxy does (nginx's
`resolver ... valid=`): the tasks it lists may be stopping meanwhile, which
is what the launcher's `shutdown.drain` is for. One line per request on
stdout: `ok ADDRESS TITLE` (the page's <h1>) or `fail ADDRESS ERROR`
(ADDRESS `-` when the name did not resolve); on SIGTERM or SIGINT a last
line `done REQUESTS FAILED`, then exit 0.
"""
import argparse
import http.client
import re
import signal
import socket
import sys
import time

TITLE = re.compile(r"<h1>(.*?)</h1>")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("service")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--interval", type=float, default=0.02)
    ap.add_argument("--dns-cache", type=float, default=0.0)
    args = ap.parse_args()
    name = "tasks." + args.service
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    requests = failed = 0
    addrs, resolved_at = [], None
    while not stop:
        requests += 1
        addr = "-"
        try:
            now = time.monotonic()
            if resolved_at is None or now - resolved_at >= args.dns_cache:
                resolved_at = None
                infos = socket.getaddrinfo(name, args.port, socket.AF_INET, socket.SOCK_STREAM)
                addrs, resolved_at = sorted({ai[4][0] for ai in infos}), now
            addr = addrs[requests % len(addrs)]
            conn = http.client.HTTPConnection(addr, args.port, timeout=5)
            try:
                conn.request("GET", "/")
                resp = conn.getresponse()
                body = resp.read().decode("utf-8", "replace")
            finally:
                conn.close()
            if resp.status != 200:
                raise OSError("HTTP %d" % resp.status)
            m = TITLE.search(body)
            print("ok %s %s" % (addr, m.group(1) if m else "?"), flush=True)
        except (OSError, http.client.HTTPException) as e:
            failed += 1
            print("fail %s %s" % (addr, (str(e) or type(e).__name__).replace("\n", " ")), flush=True)
        time.sleep(args.interval)
    print("done %d %d" % (requests, failed), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

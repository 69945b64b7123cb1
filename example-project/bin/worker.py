#!/usr/bin/env python3
"""The example project's worker: appends a heartbeat line to the data
volume every `worker_interval` seconds; the web page shows them.

    worker.py CONFIG.json
"""
import json
import os
import signal
import sys
import time


def main(argv):
    with open(argv[1], encoding="utf-8") as f:
        cfg = json.load(f)
    # TERM is waited for, not handled: the worker sleeps until the next
    # heartbeat or the stop request, whichever comes first.
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM, signal.SIGINT])
    path = os.path.join(cfg["data_dir"], "heartbeat.log")
    interval = float(cfg["worker_interval"])
    print(
        "worker up: heartbeat every %ss into %s (sized for %s CPU(s))"
        % (interval, path, cfg.get("workers", 1)),
        flush=True,
    )
    n = 0
    while True:
        n += 1
        with open(path, "a", encoding="utf-8") as f:
            f.write("%s heartbeat %d of worker %d\n" % (time.strftime("%H:%M:%S"), n, os.getpid()))
        if signal.sigtimedwait([signal.SIGTERM, signal.SIGINT], interval):
            break
    print("worker stopping after %d heartbeats" % n, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

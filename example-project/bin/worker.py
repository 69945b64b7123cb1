#!/usr/bin/env python3
"""The example project's worker: appends a heartbeat line to the data
volume every `worker_interval` seconds; the web page shows them.

    worker.py

Its settings come from its environment: WORKER_INTERVAL and
WORKER_DATA_DIR, which mc-launcher reads from configuration/worker.env (an
env file rendered from the pillar), and MC_CPUS, which every process of
mc-launcher gets.
"""
import os
import signal
import sys
import time


def main(argv):
    # TERM is waited for, not handled: the worker sleeps until the next
    # heartbeat or the stop request, whichever comes first.
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM, signal.SIGINT])
    path = os.path.join(os.environ["WORKER_DATA_DIR"], "heartbeat.log")
    interval = float(os.environ["WORKER_INTERVAL"])
    print(
        "worker up: heartbeat every %ss into %s (sized for %s CPU(s))"
        % (interval, path, os.environ.get("MC_CPUS", "1")),
        flush=True,
    )
    n = 0
    while True:
        n += 1
        with open(path, "a", encoding="utf-8") as f:
            f.write("%s heartbeat %d of worker %d\n" % (time.strftime("%H:%M:%S"), n, os.getpid()))
        if signal.sigtimedwait([signal.SIGTERM, signal.SIGINT], interval):
            break
    print("worker stopping after %d heartbeat%s" % (n, "" if n == 1 else "s"), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

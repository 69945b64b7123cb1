#!/usr/bin/env python3
"""The example project's scheduled cleanup (README "Scheduled jobs"):
keeps the last KEEP lines of the worker's heartbeat log in the data volume,
so that it does not grow forever. mc-launcher runs it from its schedule.

    cleanup.py CONFIG.json KEEP
"""
import json
import os
import sys


def main(argv):
    with open(argv[1], encoding="utf-8") as f:
        cfg = json.load(f)
    keep = int(argv[2])
    path = os.path.join(cfg["data_dir"], "heartbeat.log")
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except FileNotFoundError:
        print("cleanup: no heartbeat log yet", flush=True)
        return 0
    if len(lines) > keep:
        # A new file renamed over the old one: a reader never sees half of
        # it (the worker opens the log again for each line).
        tmp = path + ".cleanup"
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(lines[-keep:])
        os.replace(tmp, path)
    print("cleanup: kept %d of %d heartbeat lines" % (min(keep, len(lines)), len(lines)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

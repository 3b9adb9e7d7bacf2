"""Docker HEALTHCHECK. The web container must answer GET /login; the scheduler container
(started with the argument "scheduler") must have ticked within its interval, plus a
margin for a slow tick or a retry."""
import os
import sys
import time
import urllib.request

HEARTBEAT = "/tmp/huitou-scheduler-heartbeat"


def scheduler_mode() -> bool:
    try:
        with open("/proc/1/cmdline", "rb") as f:
            return b"scheduler" in f.read().split(b"\0")
    except OSError:
        return os.path.exists(HEARTBEAT)


def main() -> int:
    if scheduler_mode():
        limit = int(os.environ.get("SCHEDULER_INTERVAL", "3600")) + 900
        try:
            return 0 if time.time() - os.path.getmtime(HEARTBEAT) < limit else 1
        except OSError:
            return 1  # no tick has succeeded yet
    try:
        with urllib.request.urlopen("http://127.0.0.1:8000/login", timeout=4) as response:
            return 0 if response.status == 200 else 1
    except OSError as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

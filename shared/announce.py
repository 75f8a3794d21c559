"""`make run` prints where to go once the API answers: `python -m shared.announce URL
FLOWER_PORT` waits (up to two minutes) for URL/health, then prints the addresses."""

from __future__ import annotations

import sys
import time
import urllib.request


def wait_and_print(base_url: str, flower_port: str, timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base_url}/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        time.sleep(1)
    else:
        return False
    print(
        f"\n==> the orchestrator is up\n"
        f"    dashboard  {base_url}/dashboard\n"
        f"    API docs   {base_url}/docs\n"
        f"    Flower     {base_url.rsplit(':', 1)[0]}:{flower_port}\n",
        flush=True,
    )
    return True


if __name__ == "__main__":
    sys.exit(0 if wait_and_print(sys.argv[1], sys.argv[2]) else 1)

"""Start the Prefect UI on loopback with the pipeline served as a scheduled deployment.

    python -m flows.ui [--port 4200] [--cron "0 2 * * *"] [--concurrency 2]

Starts `prefect server start --host 127.0.0.1` (the UI is served by the server itself, offline),
waits until it is healthy, then serves the `finetune-pipeline` flow as deployment `nightly` with
the cron schedule, so runs can be triggered or scheduled from the UI. Ctrl-C / SIGTERM stops the
serve process FIRST, then the server (the other order hangs the serve process's shutdown).
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request

TELEMETRY_OFF = {"DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DVC_NO_ANALYTICS": "1"}


def wait_healthy(url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prefect server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"prefect server not healthy at {url} after {timeout:.0f} s")


def stop(process: subprocess.Popen, timeout: float = 20) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def serve(cron: str, concurrency: int) -> None:
    from flows.pipeline import configured

    configured(concurrency).serve(name="nightly", cron=cron, parameters={"concurrency": concurrency})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=4200)
    parser.add_argument("--cron", default="0 2 * * *", help="schedule of the served deployment (default: %(default)s, nightly)")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--serve-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_only:
        serve(args.cron, args.concurrency)
        return
    api = f"http://127.0.0.1:{args.port}/api"
    env = {**os.environ, **TELEMETRY_OFF, "PREFECT_API_URL": api}
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(args.port)],
                              env=env)
    served = None
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    try:
        wait_healthy(api, server)
        served = subprocess.Popen([sys.executable, "-m", "flows.ui", "--serve-only", "--cron", args.cron,
                                   "--concurrency", str(args.concurrency)], env=env)
        print(f"UI: http://127.0.0.1:{args.port}  (deployment finetune-pipeline/nightly, cron {args.cron!r}); Ctrl-C stops both")
        while not stopping and served.poll() is None and server.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        if served is not None:
            stop(served)  # serve first, or its shutdown hangs on the stopped server
        stop(server)


if __name__ == "__main__":
    main()

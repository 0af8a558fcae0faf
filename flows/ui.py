"""Start the Prefect UI on loopback with the pipeline served as a scheduled deployment.

    python -m flows.ui [--port 4200] [--cron "0 2 * * *"] [--concurrency 2]

Starts `prefect server start --host 127.0.0.1` (the UI is served by the server itself, offline),
waits until it is healthy, then serves the `finetune-pipeline` flow as deployment `nightly` with
the cron schedule, so runs can be triggered or scheduled from the UI. Ctrl-C / SIGTERM stops the
serve process FIRST, then the server (the other order hangs the serve process's shutdown).

Locked down, because any web page open in the user's browser can send requests to 127.0.0.1: CSRF
protection on (a state-changing request needs a token only a same-origin page can read), CORS limited
to the UI's own origin, the server's files private (umask 077: PREFECT_HOME 0700, its database 0600).
For a shared server set PREFECT_SERVER_API_AUTH_STRING=user:password (basic auth; the serve process and
the CLI use the same string as PREFECT_API_AUTH_STRING). The deployment runs the project it was served
from (the flow has no folder parameter) and its -S overrides go through the params schema (and may not
turn on trust_remote_code).
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


def locked_down(port: int) -> dict[str, str]:
    """Server settings against requests from other web pages, and the client side of basic auth."""
    origins = f"http://127.0.0.1:{port},http://localhost:{port}"
    settings = {"PREFECT_SERVER_API_CSRF_PROTECTION_ENABLED": "true", "PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS": origins}
    if os.environ.get("PREFECT_SERVER_API_AUTH_STRING") and not os.environ.get("PREFECT_API_AUTH_STRING"):
        settings["PREFECT_API_AUTH_STRING"] = os.environ["PREFECT_SERVER_API_AUTH_STRING"]
    return settings


def private_home(env: dict) -> None:
    """PREFECT_HOME (the server's database, logs) readable by its owner only."""
    from pathlib import Path

    home = Path(env.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o700)


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
    from flows.pipeline import pipeline

    pipeline.serve(name="nightly", cron=cron, parameters={"concurrency": concurrency})


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
    env = {**os.environ, **TELEMETRY_OFF, **locked_down(args.port), "PREFECT_API_URL": api}
    private_home(env)
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(args.port)],
                              env=env, preexec_fn=lambda: os.umask(0o077))
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

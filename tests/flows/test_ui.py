import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from tests.support.repos import PROJECT, tool_env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, headers: dict) -> tuple[int, dict, object]:
    request = urllib.request.Request(url, data=b"{}", method="POST", headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), None


def test_server_and_served_deployment_come_up_locked_down_on_loopback_and_stop_cleanly(tmp_path):
    """~18 s: a real `prefect server start` and a served deployment, both stopped again."""
    port = _free_port()
    home = tmp_path / "prefect"
    env = {**tool_env(), "PREFECT_HOME": str(home), "PYTHONPATH": str(PROJECT)}
    ui = subprocess.Popen([sys.executable, "-m", "flows.ui", "--port", str(port), "--cron", "30 3 * * *"], cwd=PROJECT,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    api = f"http://127.0.0.1:{port}/api"
    deployments, probes = [], {}
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not deployments:
            time.sleep(1)
            try:
                with urllib.request.urlopen(f"{api}/csrf-token?client=test", timeout=2) as response:
                    token = json.loads(response.read())["token"]
                status, _, found = _post(f"{api}/deployments/filter", {"Prefect-Csrf-Token": token, "Prefect-Csrf-Client": "test"})
                deployments = found if status == 200 else []
            except OSError:
                continue
        probes["no token"] = _post(f"{api}/deployments/filter", {})[0]  # what a page on another site can send
        for name, origin in (("evil origin", "http://evil.example"), ("own origin", f"http://127.0.0.1:{port}")):
            with urllib.request.urlopen(urllib.request.Request(f"{api}/health", headers={"Origin": origin}), timeout=2) as response:
                probes[name] = dict(response.headers)
    finally:
        ui.send_signal(signal.SIGTERM)
        output = ui.communicate(timeout=60)[0]
    assert [d["name"] for d in deployments] == ["nightly"], output[-3000:]
    schedules = deployments[0]["schedules"]
    assert schedules and schedules[0]["schedule"]["cron"] == "30 3 * * *"
    assert "root" not in deployments[0]["parameter_openapi_schema"]["properties"]  # the project is pinned
    assert probes["no token"] == 403  # CSRF protection on
    assert "access-control-allow-origin" not in {k.lower() for k in probes["evil origin"]}  # CORS: only the UI's own origin
    assert {k.lower(): v for k, v in probes["own origin"].items()}.get("access-control-allow-origin") == f"http://127.0.0.1:{port}"
    assert (home.stat().st_mode & 0o777) == 0o700 and (home / "prefect.db").stat().st_mode & 0o077 == 0  # private files
    assert ui.returncode == 0, output[-3000:]
    with socket.socket() as s:  # the server is gone: its port is free again
        assert s.connect_ex(("127.0.0.1", port)) != 0

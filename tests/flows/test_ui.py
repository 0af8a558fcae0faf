import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from tests.support import PROJECT, tool_env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_and_served_deployment_come_up_on_loopback_and_stop_cleanly(tmp_path):
    port = _free_port()
    env = {**tool_env(), "PREFECT_HOME": str(tmp_path / "prefect"), "PYTHONPATH": str(PROJECT)}
    ui = subprocess.Popen([sys.executable, "-m", "flows.ui", "--port", str(port), "--cron", "30 3 * * *"], cwd=PROJECT,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    api = f"http://127.0.0.1:{port}/api"
    deployments = []
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not deployments:
            time.sleep(1)
            try:
                request = urllib.request.Request(f"{api}/deployments/filter", data=b"{}", method="POST",
                                                 headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=2) as response:
                    deployments = json.loads(response.read())
            except OSError:
                continue
    finally:
        ui.send_signal(signal.SIGTERM)
        output = ui.communicate(timeout=60)[0]
    assert [d["name"] for d in deployments] == ["nightly"], output[-3000:]
    schedules = deployments[0]["schedules"]
    assert schedules and schedules[0]["schedule"]["cron"] == "30 3 * * *"
    assert ui.returncode == 0, output[-3000:]
    with socket.socket() as s:  # the server is gone: its port is free again
        assert s.connect_ex(("127.0.0.1", port)) != 0

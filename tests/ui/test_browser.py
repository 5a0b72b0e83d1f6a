"""`make ui` as a user meets it: headless Chromium logs in, fills the trigger form with a
non-default parameter, and the run succeeds; Ctrl-C then leaves nothing running."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]  # fmt: skip
BATCH = "2026-01-15"
PASSWORD = "browser-test-password"

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason="Debian's chromium is not installed (make test installs it: scripts/system-deps.sh)",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def api(base: str, path: str, token: str) -> dict:
    req = urllib.request.Request(f"{base}{path}", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)


def login_token(base: str) -> str:
    body = json.dumps({"username": "admin", "password": PASSWORD}).encode()
    req = urllib.request.Request(
        f"{base}/auth/token", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)["access_token"]


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    """`scripts/ui.sh` (what `make ui` runs) on a free port, stopped with SIGINT (Ctrl-C)."""
    home = tmp_path_factory.mktemp("ui")
    port = free_port()
    env = {
        **os.environ,
        "UI_PORT": str(port),
        "UI_PASSWORD": PASSWORD,
        "UI_DATE": BATCH,
        "UI_PER_LABEL": "4",
        "UI_HOME": str(home / "home"),
        "FRUITS_INCOMING": str(home / "incoming"),
        "FRUITS_IMAGE_SIZE": "64",
    }
    log = open(home / "ui.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        ["bash", str(ROOT / "scripts" / "ui.sh")],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while "Airflow is up" not in (home / "ui.log").read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail("make ui did not come up:\n" + (home / "ui.log").read_text()[-3000:])
        time.sleep(1)
    info = {"base": base, "port": port, "home": home, "proc": proc}
    yield info
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal sends
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    log.close()


def wait_for_dag(base: str, token: str) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            api(base, "/api/v2/dags/fruits_pipeline", token)
            return
        except urllib.error.HTTPError:
            time.sleep(2)
    pytest.fail("the DAG never appeared in the UI")


def test_trigger_from_the_form_and_the_run_succeeds(ui):
    from playwright.sync_api import sync_playwright

    base = ui["base"]
    token = login_token(base)
    wait_for_dag(base, token)
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        page.goto(base + "/")
        page.fill("input[name=username]", "admin")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_selector("text=Dags")
        page.goto(base + "/dags/fruits_pipeline")
        page.click("[data-testid=trigger-dag-button]")
        page.fill("input[name=element_batch_date]", BATCH)
        variance = page.locator("[id='number-input:element_variance:inc']").locator("..")
        field = variance.locator("..").locator("input[role=spinbutton]")
        field.fill("0.8")
        page.screenshot(path=str(ARTIFACTS / "ui-trigger-form.png"))
        page.click("[data-testid=trigger-dag-submit]")

        run = None
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            runs = api(base, "/api/v2/dags/fruits_pipeline/dagRuns?run_type=manual", token)
            manual = [r for r in runs["dag_runs"] if r["conf"].get("batch_date") == BATCH]
            if manual and manual[0]["state"] in ("success", "failed"):
                run = manual[0]
                break
            time.sleep(5)
        assert run is not None, "the triggered run did not finish in 15 minutes"
        page.goto(f"{base}/dags/fruits_pipeline/runs/{run['dag_run_id']}")
        page.wait_for_timeout(3000)
        page.screenshot(path=str(ARTIFACTS / "ui-run.png"), full_page=True)
        browser.close()

    assert run["state"] == "success", run
    assert run["conf"]["variance"] == 0.8  # the form's value, not the default 0.95
    tis = api(base, f"/api/v2/dags/fruits_pipeline/dagRuns/{run['dag_run_id']}/taskInstances",
              token)["task_instances"]  # fmt: skip
    states = {t["task_id"]: t["state"] for t in tis}
    assert states["wait_for_step"] == "success" and states["remove_cluster"] == "success"
    summary = api(
        base,
        f"/api/v2/dags/fruits_pipeline/dagRuns/{run['dag_run_id']}"
        "/taskInstances/summarize_run/xcomEntries/return_value",
        token,
    )["value"]
    summary = json.loads(summary) if isinstance(summary, str) else summary
    assert summary["rejected"] == 4 and summary["rows"] == 24


def test_ctrl_c_stops_everything(ui):
    proc = ui["proc"]
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=120) is not None
    time.sleep(2)
    assert not port_open(ui["port"]), "the api-server still listens after Ctrl-C"
    leftovers = subprocess.run(
        ["pgrep", "-f", str(ui["home"])], capture_output=True, text=True
    ).stdout.split()
    assert leftovers == [], f"processes left running: {leftovers}"
    assert "stopped" in (ui["home"] / "ui.log").read_text()

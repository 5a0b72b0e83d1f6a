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
import urllib.error
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
    return fetch_json(req)


def fetch_json(req: urllib.request.Request, patience_s: float = 120) -> dict:
    """An answer slower than 30 s (a busy host, SQLite waiting for a lock) is asked for
    again until ``patience_s`` have passed; an HTTP error is not."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return json.load(resp)
        except urllib.error.HTTPError:
            raise
        except (TimeoutError, urllib.error.URLError):
            if time.monotonic() > deadline:
                raise
            time.sleep(2)


def login_token(base: str) -> str:
    body = json.dumps({"username": "admin", "password": PASSWORD}).encode()
    req = urllib.request.Request(
        f"{base}/auth/token", data=body, headers={"Content-Type": "application/json"}
    )
    return fetch_json(req)["access_token"]


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
    info = {"base": base, "port": port, "home": home, "proc": proc, "env": env}
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
        deadline = time.monotonic() + 1500
        while time.monotonic() < deadline:
            runs = api(base, "/api/v2/dags/fruits_pipeline/dagRuns?run_type=manual", token)
            manual = [r for r in runs["dag_runs"] if r["conf"].get("batch_date") == BATCH]
            if manual and page.url != "about:blank":
                page.goto("about:blank")  # the run exists: no UI polling while it runs
            if manual and manual[0]["state"] in ("success", "failed"):
                run = manual[0]
                break
            time.sleep(5)
        assert run is not None, "the triggered run did not finish in 25 minutes"
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


def test_backfill_over_two_dates_runs_them_one_at_a_time(ui):
    """`airflow backfill create` (the command the README gives) against the running
    scheduler: two batches, two outputs, never two clusters at once."""
    from fruits.dev.sample_batch import write_batch

    dates = ["2026-01-10", "2026-01-11"]
    for n, date in enumerate(dates):
        write_batch(ui["home"] / "incoming" / date, per_label=2, labels=["Kiwi", "Lime"], seed=n)
    # as the banner of `make ui` says: its environment, then the README's command
    cli_env = ui["home"] / "home" / "cli.env"
    assert f"source {cli_env}" in (ui["home"] / "ui.log").read_text()
    created = subprocess.run(
        ["bash", "-c", f"source {cli_env} && airflow backfill create --dag-id fruits_pipeline"
         f" --from-date {dates[0]} --to-date {dates[-1]}"],
        env={"HOME": os.environ.get("HOME", "/root"), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert created.returncode == 0, created.stdout + created.stderr

    base, token = ui["base"], login_token(ui["base"])
    deadline = time.monotonic() + 1200
    while True:
        runs = api(base, "/api/v2/dags/fruits_pipeline/dagRuns?run_type=backfill", token)
        runs = runs["dag_runs"]
        if len(runs) == 2 and all(r["state"] in ("success", "failed") for r in runs):
            break
        assert time.monotonic() < deadline, f"backfill did not finish: {runs}"
        time.sleep(5)
    assert [r["state"] for r in runs] == ["success", "success"], runs
    # each run's cluster lives from create_job_flow's start to remove_cluster's end
    spans = []
    for r in runs:
        tis = api(base, f"/api/v2/dags/fruits_pipeline/dagRuns/{r['dag_run_id']}/taskInstances",
                  token)["task_instances"]  # fmt: skip
        ti = {t["task_id"]: t for t in tis}
        spans.append((ti["create_job_flow"]["start_date"], ti["remove_cluster"]["end_date"]))
    first, second = sorted(spans)
    assert first[1] <= second[0], f"two clusters at once: {spans}"
    batches = set()
    for r in runs:
        summary = api(
            base,
            f"/api/v2/dags/fruits_pipeline/dagRuns/{r['dag_run_id']}"
            "/taskInstances/summarize_run/xcomEntries/return_value",
            token,
        )["value"]
        summary = json.loads(summary) if isinstance(summary, str) else summary
        assert summary["rows"] == 4
        batches.add(summary["batch"])
    assert batches == set(dates)


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

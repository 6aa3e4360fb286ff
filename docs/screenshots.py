"""Regenerate the README's screenshots of the MLflow UI (docs/images/ui-*.png).

    python3 docs/screenshots.py [--out docs/images] [--workdir DIR]

Needs Playwright for Python and a Chromium (`pip install playwright`; `apt-get install chromium`,
or `playwright install chromium` where downloads are allowed; `--chromium PATH` or $CHROMIUM picks
the executable, default /usr/bin/chromium). In a scratch folder with its own store
(MLFLOW_TRACKING_URI=sqlite:///DIR/mlflow.db, MNR_CHECKPOINT_DIR=DIR/checkpoints; MNR_HOME is kept,
so the built-in dataset is reused) it runs the real CLI:

    mnr train --model bn_cnn --epochs 8 --register piano
    mnr promote piano 1 --alias champion
    mnr tune --trials 6 --epochs 3 --study-name demo -s train.threads=1

then starts `mlflow server` on a free loopback port, photographs four pages in a headless
Chromium and stops the server, also on errors. `--workdir DIR` keeps the scratch folder, and a
second run with the same DIR skips the training and only retakes the pictures.

The MLflow 3 UI opens in its "GenAI" mode, whose side bar and experiment pages are about traces.
The classic view is the "Model training" half of the toggle at the top of the side bar, or
`?workflowType=machine_learning` on an experiment URL; the choice is remembered in the browser's
localStorage as `mlflow.workflowType_v1` = `"machine_learning"`, which this script sets before
every page loads (and closes the MLflow Assistant panel the same way).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "docs" / "images"

VIEWPORT = {"width": 1400, "height": 900}
# Chromium in a closed network: without the background-networking switches its own update and
# sync connections are refused and pages stall.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Runs before every page's own scripts: the "Model training" view, and no Assistant panel (it
# opens by itself on the first visit and takes a third of the width).
UI_STATE_SCRIPT = """
try {
  localStorage.setItem("mlflow.workflowType_v1", JSON.stringify("machine_learning"));
  localStorage.setItem("mlflow.assistant.fab.autoOpenedOnFirstLoad_v1", "true");
  localStorage.setItem("mlflow.assistant.panelOpen_v1", "false");
} catch (error) {}
"""
# True when no spinner is on screen (charts below the fold keep theirs until scrolled to).
VISIBLE_SPINNERS = """() => ![...document.querySelectorAll('[role=progressbar], [class*=spin-spinning]')]
  .some((e) => { const r = e.getBoundingClientRect();
                 return r.width > 0 && r.bottom > 0 && r.top < window.innerHeight; })"""
SERVER_START_SECONDS = 120
PAGE_SECONDS = 60

REGISTERED_MODEL = "piano"
STUDY = "demo"


@dataclass
class Content:
    """The ids of what the screenshots show, read back from the store."""

    experiment_id: str
    train_run_id: str
    study_run_id: str


def run_mnr(args: list[str], *, cwd: Path, env: dict[str, str]) -> None:
    """Run one `mnr` command in `cwd`, echoing it; a failure stops the script."""
    print("+ mnr " + " ".join(args), flush=True)
    subprocess.run(["mnr", *args], cwd=cwd, env=env, check=True)


def store_env(workdir: Path) -> dict[str, str]:
    """The environment for mnr and mlflow: the scratch store, the user's MNR_HOME."""
    env = dict(os.environ)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{workdir / 'mlflow.db'}"
    env["MNR_CHECKPOINT_DIR"] = str(workdir / "checkpoints")
    # The tracking server's background job runner is not needed for screenshots, and scratch runs
    # are nothing to report home about.
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    return env


def find_content(workdir: Path) -> Content | None:
    """The trained run and the study run in `workdir`'s store, or None if they are not there."""
    if not (workdir / "mlflow.db").is_file():
        return None
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    try:
        version = client.get_model_version_by_alias(REGISTERED_MODEL, "champion")
    except MlflowException:
        return None
    train_run = client.get_run(version.run_id)
    studies = client.search_runs(
        [train_run.info.experiment_id],
        filter_string=f"tags.`mnr.role` = 'study' and tags.`mnr.study` = '{STUDY}'",
        max_results=1,
    )
    if not studies:
        return None
    return Content(train_run.info.experiment_id, train_run.info.run_id, studies[0].info.run_id)


def make_content(workdir: Path, env: dict[str, str]) -> Content:
    """Train, register, promote and tune with the real CLI, as a user would."""
    run_mnr(
        ["train", "--model", "bn_cnn", "--epochs", "8", "--register", REGISTERED_MODEL, "-q"],
        cwd=workdir,
        env=env,
    )
    run_mnr(["promote", REGISTERED_MODEL, "1", "--alias", "champion"], cwd=workdir, env=env)
    run_mnr(
        ["tune", "--trials", "6", "--epochs", "3", "--study-name", STUDY, "-q"]
        + ["-s", "train.threads=1"],
        cwd=workdir,
        env=env,
    )
    content = find_content(workdir)
    if content is None:
        raise SystemExit(
            f"error: the mnr commands ran but {workdir / 'mlflow.db'} lacks their runs"
        )
    return content


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(workdir: Path, env: dict[str, str]) -> Iterator[str]:
    """Serve `workdir`'s store with `mlflow server`; yield its URL; always stop it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (workdir / "mlflow-server.log").open("w")
    command = ["mlflow", "server", "--backend-store-uri", env["MLFLOW_TRACKING_URI"]]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    # A session of its own, so that stopping it also stops the workers uvicorn starts.
    server = subprocess.Popen(
        command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + SERVER_START_SECONDS
        while True:
            if server.poll() is not None:
                raise SystemExit(f"error: mlflow server exited; see {log.name}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"error: mlflow server did not answer in {SERVER_START_SECONDS} s")
            time.sleep(0.5)
        print(f"mlflow server at {url}", flush=True)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, 15)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, 9)
            server.wait()
        log.close()


class Network:
    """Counts a page's requests in flight, to wait for a quiet moment.

    Playwright's "networkidle" never comes on these pages: the UI polls the server every few
    seconds. No API call in flight for QUIET_SECONDS is what "the data has arrived" means here.
    """

    QUIET_SECONDS = 1.0

    def __init__(self, page) -> None:
        self.in_flight = 0
        self.last_change = time.monotonic()
        page.on("request", lambda request: self._change(request, +1))
        page.on("requestfinished", lambda request: self._change(request, -1))
        page.on("requestfailed", lambda request: self._change(request, -1))

    def _change(self, request, delta: int) -> None:
        # Only the data calls: the telemetry web worker's script request never reports an end.
        if request.resource_type not in ("fetch", "xhr"):
            return
        self.in_flight = max(0, self.in_flight + delta)
        self.last_change = time.monotonic()

    def quiet(self) -> bool:
        """Whether no API call is in flight and none started or ended in QUIET_SECONDS."""
        return self.in_flight == 0 and time.monotonic() - self.last_change > self.QUIET_SECONDS


def settle(page, network: Network) -> None:
    """Wait until no API call is in flight and no spinner is left on screen."""
    deadline = time.monotonic() + PAGE_SECONDS
    while not network.quiet():
        if time.monotonic() > deadline:
            raise SystemExit(f"error: {page.url} kept loading for {PAGE_SECONDS} s")
        page.wait_for_timeout(200)
    page.wait_for_function(VISIBLE_SPINNERS, timeout=PAGE_SECONDS * 1000)
    # Charts and tables animate in; give them a moment after the data arrived.
    page.wait_for_timeout(1500)


def shoot_run(page, network: Network, base: str, content: Content, out: Path) -> None:
    """The trained run's overview: description, metrics, params, tags, registered model."""
    page.set_viewport_size({"width": VIEWPORT["width"], "height": 1500})
    page.goto(f"{base}/#/experiments/{content.experiment_id}/runs/{content.train_run_id}")
    page.get_by_text("Parameters").first.wait_for()
    settle(page, network)
    rest_pointer(page)
    page.screenshot(path=out)


def shoot_charts(page, network: Network, base: str, content: Content, out: Path) -> None:
    """The trained run's model-metric charts with the per-epoch train/ and val/ sections."""
    page.set_viewport_size({"width": VIEWPORT["width"], "height": 1500})
    page.goto(
        f"{base}/#/experiments/{content.experiment_id}/runs/{content.train_run_id}/model-metrics"
    )
    page.get_by_text(re.compile(r"^train$")).first.wait_for()
    settle(page, network)
    # The test/ section comes first and holds one point per chart (step = last epoch): fold it
    # so that the curves are what the picture shows.
    page.get_by_text(re.compile(r"^test$")).first.click()
    settle(page, network)
    rest_pointer(page)
    page.screenshot(path=out)


def shoot_tune(page, network: Network, base: str, content: Content, out: Path) -> None:
    """The experiment's run list with the study run expanded into its trials."""
    page.set_viewport_size(VIEWPORT)
    page.goto(f"{base}/#/experiments/{content.experiment_id}/runs")
    page.locator("[role=row]", has_text=STUDY).first.wait_for()
    settle(page, network)
    # Show what the search varied and what it found; drop the columns that are the same for
    # every trial, so that the trials' names fit.
    page.get_by_role("button", name="Columns").click()
    selector = page.get_by_role("dialog")
    for column in ("Dataset", "Source", "best/val_acc", "optim.lr", "train.batch_size"):
        selector.get_by_placeholder("Search columns").fill(column)
        # The whole title, not a highlighted part of one ("optim.lr" is also in "best.optim.lr").
        title = re.compile(f"^{re.escape(column)}$")
        selector.locator("[class*=tree-title]").filter(has_text=title).first.click()
    page.keyboard.press("Escape")
    widen_column(page, "attributes.`Run Name`", by=110)
    study_row = page.locator("[role=row]", has_text=STUDY).first
    study_row.get_by_role("button").first.click()
    page.locator("[role=row]", has_text="trial 005").first.wait_for()
    settle(page, network)
    rest_pointer(page)
    # Down to the last row; the rest of the table is empty.
    page.screenshot(path=out, clip={"x": 0, "y": 0, "width": VIEWPORT["width"], "height": 540})


def widen_column(page, col_id: str, *, by: int) -> None:
    """Drag the right edge of the run table's column `col_id` `by` pixels to the right."""
    handle = page.locator(f'[role=columnheader][col-id="{col_id}"] .ag-header-cell-resize')
    box = handle.bounding_box()
    # The handle straddles the border; its left half, else the press lands on the next header
    # (and sorts the table by it).
    x, y = box["x"] + 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + by, y, steps=10)
    page.mouse.up()


def rest_pointer(page) -> None:
    """Park the mouse on the page margin and drop the focus, so that nothing looks hovered."""
    page.mouse.move(VIEWPORT["width"] - 4, 4)
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    page.wait_for_timeout(300)


def shoot_model(page, network: Network, base: str, content: Content, out: Path) -> None:
    """The registered model: its version, tags and the champion alias."""
    page.set_viewport_size(VIEWPORT)
    page.goto(f"{base}/#/models/{REGISTERED_MODEL}")
    page.get_by_text("champion").first.wait_for()
    settle(page, network)
    rest_pointer(page)
    page.screenshot(path=out, clip={"x": 0, "y": 0, "width": VIEWPORT["width"], "height": 520})


SHOTS = {
    "ui-run.png": shoot_run,
    "ui-charts.png": shoot_charts,
    "ui-tune.png": shoot_tune,
    "ui-model.png": shoot_model,
}


def take_screenshots(base: str, content: Content, out_dir: Path, chromium: str) -> list[Path]:
    """Photograph every page of SHOTS into `out_dir`; return the files written."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise SystemExit("error: needs Playwright: pip install playwright, in mnr's venv") from None
    if not Path(chromium).is_file():
        raise SystemExit(f"error: no Chromium at {chromium}; pass --chromium PATH")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory(prefix="mnr-chromium-") as profile, sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            profile,
            executable_path=chromium,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport=VIEWPORT,
            color_scheme="light",
        )
        try:
            browser.add_init_script(UI_STATE_SCRIPT)
            page = browser.new_page()
            network = Network(page)
            page.set_default_timeout(PAGE_SECONDS * 1000)
            for name, shoot in SHOTS.items():
                shoot(page, network, base, content, out_dir / name)
                written.append(out_dir / name)
        finally:
            browser.close()
    return written


def main() -> None:
    """Make the runs (unless --workdir already has them), serve them, photograph them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=IMAGES, help="where the PNGs go")
    parser.add_argument(
        "--workdir", type=Path, help="keep the store here (reused when it has the runs)"
    )
    parser.add_argument(
        "--chromium",
        default=os.environ.get("CHROMIUM", "/usr/bin/chromium"),
        help="the Chromium executable (default: $CHROMIUM, else /usr/bin/chromium)",
    )
    args = parser.parse_args()
    if shutil.which("mnr") is None:
        raise SystemExit("error: no `mnr` on PATH; activate mnr's venv: . .venv/bin/activate")
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if args.workdir:
            workdir = args.workdir.resolve()
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mnr-ui-")))
        env = store_env(workdir)
        content = find_content(workdir)
        if content is None:
            content = make_content(workdir, env)
        else:
            print(f"reusing the runs in {workdir / 'mlflow.db'}", flush=True)
        with mlflow_server(workdir, env) as base:
            written = take_screenshots(base, content, args.out.resolve(), args.chromium)
    print(f"{len(written)} screenshots in {args.out} ({time.perf_counter() - started:.0f} s):")
    for path in written:
        print(f"  {path} ({path.stat().st_size // 1024} kB)")


if __name__ == "__main__":
    sys.exit(main())

"""Real servers for the scaling-out tests: a PostgreSQL cluster and an MLflow tracking server.

Each is started once per test session (session-scoped fixtures) in a fresh temporary folder and
stopped in a `finally`, so a failing test leaves no process behind. The commands are the ones
`docs/scaling.md` gives, with a temporary folder and a free loopback port in place of the
document's paths and port 5432/5000.

PostgreSQL refuses to run as root, so when the tests run as root (CI containers) every
PostgreSQL command runs as the `postgres` user through `runuser`, and the cluster lives in a
folder under the system temp dir that user can reach (pytest's own temp dirs are private to
root). Only missing PostgreSQL binaries skip the tests; anything else that goes wrong fails them
with the server's log.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = [
    "MlflowServer",
    "Postgres",
    "free_port",
    "mlflow_server",
    "postgres",
    "postgres_bin",
    "start_mlflow_server",
    "start_postgres",
    "wait_for_health",
]

PG_USER, PG_PASSWORD = "postgres", "mnr"  # loopback only, for the life of one test session
DATABASES = ("mlflow", "optuna")  # one for the tracking server, one for Optuna studies
# mnr starts no server-side jobs (those run GenAI judges); without them the server is one process.
SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
STARTUP_SECONDS = 120.0  # a loaded 2-core CI machine imports MLflow's server slowly


def free_port() -> int:
    """A TCP port nothing listens on right now, on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def postgres_bin() -> Path | None:
    """The folder with initdb and pg_ctl: Debian's newest /usr/lib/postgresql/*/bin, else PATH."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).resolve().parent
    return None


@dataclass(frozen=True)
class Postgres:
    """A running PostgreSQL cluster; `url(db)` is the SQLAlchemy URL MLflow and Optuna take."""

    host: str
    port: int
    user: str
    password: str
    root: Path

    def url(self, database: str) -> str:
        # The driver is named: SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3, not psycopg2.
        return (
            f"postgresql+psycopg2://{self.user}:{self.password}@{self.host}:{self.port}/{database}"
        )


def _as_postgres(command: list[str]) -> list[str]:
    """Run as the postgres user when we are root (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return command
    if shutil.which("runuser"):
        return ["runuser", "-u", PG_USER, "--", *command]
    return ["su", PG_USER, "-s", "/bin/sh", "-c", shlex.join(command)]


def _run(command: list[str], *, log: Path | None = None) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        extra = log.read_text()[-3000:] if log is not None and log.is_file() else ""
        raise RuntimeError(
            f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}{result.stderr}{extra}"
        )


@contextmanager
def start_postgres(*, databases: tuple[str, ...] = DATABASES) -> Iterator[Postgres]:
    """initdb a new cluster, start it on a free loopback port, create `databases`; stop it after.

    The commands (docs/scaling.md, "A study database"):

        initdb -D PGDATA -U postgres --pwfile=PWFILE --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8
        pg_ctl -D PGDATA -l LOGFILE -w -t 60 -o "-c listen_addresses=HOST -p PORT -k SOCKETS" start
        createdb -h HOST -p PORT -U postgres mlflow     (and optuna)
        pg_ctl -D PGDATA -m fast stop
    """
    folder = postgres_bin()
    if folder is None:
        pytest.skip(
            "PostgreSQL is not installed (no initdb/pg_ctl); .ci/run installs Debian's postgresql"
        )
    root = Path(tempfile.mkdtemp(prefix="mnr-pg-"))
    data, sockets, pwfile, log = (
        root / "data",
        root / "sockets",
        root / "pwfile",
        root / "server.log",
    )
    sockets.mkdir()
    pwfile.write_text(PG_PASSWORD + "\n")
    if os.geteuid() == 0:
        root.chmod(0o755)
        for path in (root, sockets, pwfile):
            shutil.chown(path, user=PG_USER)
    port = free_port()
    host = "127.0.0.1"
    env_password = {**os.environ, "PGPASSWORD": PG_PASSWORD}
    try:
        _run(
            _as_postgres(
                [
                    str(folder / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    PG_USER,
                    f"--pwfile={pwfile}",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "--encoding=UTF8",
                ]
            )
        )
        _run(
            _as_postgres(
                [
                    str(folder / "pg_ctl"),
                    "-D",
                    str(data),
                    "-l",
                    str(log),
                    "-w",
                    "-t",
                    "60",
                    "-o",
                    f"-c listen_addresses={host} -p {port} -k {sockets}",
                    "start",
                ]
            ),
            log=log,
        )
        createdb = folder / "createdb"
        for name in databases:
            result = subprocess.run(
                [str(createdb), "-h", host, "-p", str(port), "-U", PG_USER, name],
                capture_output=True,
                text=True,
                timeout=60,
                env=env_password,
                check=False,
            )
            if result.returncode != 0:
                raise RuntimeError(
                    f"createdb {name} failed: {result.stderr}\n{log.read_text()[-3000:]}"
                )
        yield Postgres(host=host, port=port, user=PG_USER, password=PG_PASSWORD, root=root)
    finally:
        if (data / "postmaster.pid").exists():  # started, even if `pg_ctl start` then failed
            subprocess.run(
                _as_postgres([str(folder / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                capture_output=True,
                timeout=60,
                check=False,
            )
        shutil.rmtree(root, ignore_errors=True)


@dataclass(frozen=True)
class MlflowServer:
    """A running `mlflow server`; `url` is what MLFLOW_TRACKING_URI is set to."""

    url: str
    artifacts: Path
    log: Path
    process: subprocess.Popen


def wait_for_health(
    url: str, process: subprocess.Popen, log: Path, *, timeout: float = STARTUP_SECONDS
) -> None:
    """Poll `url`/health until it answers 200; fail with the log if the process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"mlflow server exited with {process.returncode}:\n{log.read_text()[-4000:]}"
            )
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as response:  # noqa: S310 - loopback
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise RuntimeError(
        f"mlflow server did not answer {url}/health within {timeout:.0f} s:\n{log.read_text()[-4000:]}"
    )


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM the server's process group (uvicorn workers included), then SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=10)


@contextmanager
def start_mlflow_server(
    backend_store_uri: str, root: Path, *, workers: int = 1
) -> Iterator[MlflowServer]:
    """`mlflow server` on a free loopback port with artifacts proxied into `root/artifacts`.

    The command (docs/scaling.md, "A tracking server"):

        mlflow server --backend-store-uri postgresql://... --serve-artifacts
            --artifacts-destination ARTIFACTS --host HOST --port PORT --workers 1

    with MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false in its environment.
    """
    port = free_port()
    artifacts, log = root / "artifacts", root / "mlflow-server.log"
    artifacts.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        backend_store_uri,
        "--serve-artifacts",
        "--artifacts-destination",
        str(artifacts),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    with open(log, "w") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=root,
            start_new_session=True,
            env={**os.environ, **SERVER_ENV},
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(url, process, log)
        yield MlflowServer(url=url, artifacts=artifacts, log=log, process=process)
    finally:
        _stop(process)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL cluster with the databases `mlflow` and `optuna`, for the whole session."""
    with start_postgres() as server:
        yield server


@pytest.fixture(scope="session")
def mlflow_server(
    postgres: Postgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MlflowServer]:
    """An MLflow tracking server on PostgreSQL (database `mlflow`), for the whole session."""
    with start_mlflow_server(
        postgres.url("mlflow"), tmp_path_factory.mktemp("mlflow-server")
    ) as server:
        yield server

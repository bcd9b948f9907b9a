"""A throwaway PostgreSQL server on 127.0.0.1 for the sweep storage tests.

``PostgresServer.start()`` runs Debian's ``initdb`` and ``pg_ctl`` (from PATH or
/usr/lib/postgresql/*/bin) into a fresh temporary directory, listening on a free port of
127.0.0.1 only, with ``fsync=off`` (a test database need not survive a power cut). initdb refuses
to run as root, so as root the server runs as the ``postgres`` user. ``missing()`` says why a
server cannot be started here (None when it can).
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def missing() -> str | None:
    """Why no server can be started (None if one can)."""
    if not (_binary("initdb") and _binary("pg_ctl")):
        return ("PostgreSQL is not installed (no initdb/pg_ctl on PATH or in /usr/lib/postgresql/*/bin); "
                ".ci/run installs Debian's postgresql")
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "psycopg2 is not installed (pip install -e '.[test]' installs psycopg2-binary)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run initdb as"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """One server; ``url(db)`` is an SQLAlchemy URL of database ``db`` on it."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="iwae_pl_pg_"))
        self.data = self.root / "data"
        self.port = 0  # chosen in start(): a port picked earlier may be taken by then
        self._as = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    def _run(self, *argv: str) -> None:
        subprocess.run([*self._as, *argv], check=True, capture_output=True, timeout=120)

    def start(self, attempts: int = 3) -> "PostgresServer":
        self._run(_binary("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        for attempt in range(attempts):  # another process may bind the free port first: pick a new one
            self.port = _free_port()
            options = (f"-c fsync=off -c listen_addresses=127.0.0.1 -p {self.port} "
                       f"-c unix_socket_directories={self.root} -c max_connections=100")
            try:
                self._run(_binary("pg_ctl"), "-D", str(self.data), "-o", options, "-l",
                          str(self.root / "server.log"), "-w", "-t", "60", "start")
                return self
            except subprocess.CalledProcessError:
                if attempt == attempts - 1:
                    raise

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database; its URL."""
        import sqlalchemy

        engine = sqlalchemy.create_engine(self.url(), isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        return self.url(name)

    def stop(self) -> None:
        try:
            self._run(_binary("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

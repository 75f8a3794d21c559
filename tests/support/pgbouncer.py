"""A PgBouncer of a test run's own, in transaction pooling mode (Debian's pgbouncer).

`make test-pgbouncer` runs tests through one:

    python -m tests.support.pgbouncer pytest tests/api/test_agents.py ...

starts it on a free port in a fresh directory (trust, a wildcard database entry that
points at PostgreSQL, small pools: this machine's PostgreSQL is shared), runs the command
with TEST_POSTGRES_URL pointing at it and TEST_POSTGRES_ADMIN_URL at PostgreSQL itself
(CREATE and DROP DATABASE go there), then stops it and removes its directory. Tests of
their own start one with `running_pgbouncer()`. Never the system service.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy.engine import make_url

DIRECT_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
# PostgreSQL's max_connections (100) is shared by everyone on this machine: the pooler
# opens at most this many server connections per database, whatever its clients do.
POOL_SIZE = int(os.environ.get("PGBOUNCER_POOL_SIZE", "10"))
MAX_CLIENT_CONNECTIONS = 500
PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"  # Debian's, in sbin


@dataclass(frozen=True)
class PgBouncer:
    port: int
    directory: str
    server_url: str  # the PostgreSQL it stands in front of

    def url(self, database: str | None = None) -> str:
        """`server_url` through the pooler (on `database` if given)."""
        url = make_url(self.server_url).set(host="127.0.0.1", port=self.port)
        if database is not None:
            url = url.set(database=database)
        return url.render_as_string(hide_password=False)

    def log(self) -> str:
        try:
            with open(os.path.join(self.directory, "pgbouncer.log")) as log:
                return log.read()
        except OSError:
            return ""


def direct_server_url() -> str:
    """PostgreSQL itself, never a pooler: where the tests create their database."""
    return (
        os.environ.get("TEST_POSTGRES_ADMIN_URL")
        or os.environ.get("TEST_POSTGRES_URL")
        or DIRECT_URL
    )


@contextmanager
def running_pgbouncer(
    server_url: str = DIRECT_URL, *, pool_size: int = POOL_SIZE
) -> Iterator[PgBouncer]:
    """A pgbouncer process in transaction mode in front of `server_url`'s PostgreSQL,
    stopped and its files removed afterwards."""
    server = make_url(server_url)
    directory = tempfile.mkdtemp(prefix="orch-pgbouncer-")
    process = None
    try:
        for _ in range(5):  # another process may take the free port before pgbouncer does
            bouncer = PgBouncer(_free_port(), directory, server_url)
            _write_config(bouncer, server, pool_size)
            process = _start(bouncer)
            if _wait_until_listening(bouncer, process):
                break
            _stop(process)
            process = None
        if process is None:
            raise RuntimeError(f"pgbouncer did not start:\n{bouncer.log()}")
        yield bouncer
    finally:
        if process is not None:
            _stop(process)
        shutil.rmtree(directory, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _write_config(bouncer: PgBouncer, server, pool_size: int) -> None:
    user = server.username or "postgres"
    files = {
        "userlist.txt": f'"{user}" "{server.password or ""}"\n',
        "pgbouncer.ini": f"""\
[databases]
* = host={server.host or "127.0.0.1"} port={server.port or 5432}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {bouncer.port}
unix_socket_dir =
auth_type = trust
auth_file = {bouncer.directory}/userlist.txt
pool_mode = transaction
max_client_conn = {MAX_CLIENT_CONNECTIONS}
default_pool_size = {pool_size}
max_db_connections = {pool_size}
reserve_pool_size = 0
server_lifetime = 300
logfile = {bouncer.directory}/pgbouncer.log
admin_users = {user}
""",
    }
    for name, content in files.items():
        with open(os.path.join(bouncer.directory, name), "w") as file:
            file.write(content)


def _start(bouncer: PgBouncer) -> subprocess.Popen:
    command = [PGBOUNCER, os.path.join(bouncer.directory, "pgbouncer.ini")]
    if os.geteuid() == 0:  # pgbouncer refuses to run as root
        owner = pwd.getpwnam("postgres")
        paths = [os.path.join(bouncer.directory, name) for name in os.listdir(bouncer.directory)]
        for path in [bouncer.directory, *paths]:
            os.chown(path, owner.pw_uid, owner.pw_gid)
        command = ["runuser", "-u", "postgres", "--", *command]
    return subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


def _wait_until_listening(bouncer: PgBouncer, process: subprocess.Popen) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", bouncer.port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def _stop(process: subprocess.Popen) -> None:
    """SIGINT: pgbouncer's fast shutdown (its clients are cut off, it exits at once).
    The signal goes to its process group (runuser and pgbouncer, when run as root)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def main(command: list[str]) -> int:
    """Run `command` with the test database behind a pgbouncer of its own."""
    if not command:
        print("usage: python -m tests.support.pgbouncer COMMAND [ARGS...]", file=sys.stderr)
        return 2
    direct = os.environ.get("TEST_POSTGRES_URL", DIRECT_URL)
    with running_pgbouncer(direct) as bouncer:
        print(
            f"==> pgbouncer (transaction mode, {POOL_SIZE} server connections) on port "
            f"{bouncer.port}",
            flush=True,
        )
        env = {**os.environ, "TEST_POSTGRES_URL": bouncer.url(), "TEST_POSTGRES_ADMIN_URL": direct}
        child = subprocess.Popen(command, env=env)
        # A CI timeout's SIGTERM stops the tests; the wait below then returns, and
        # pgbouncer is stopped on the way out.
        signal.signal(signal.SIGTERM, lambda signum, _frame: child.send_signal(signum))
        try:
            status = child.wait()
        except KeyboardInterrupt:
            child.send_signal(signal.SIGINT)
            status = child.wait()
        return 128 - status if status < 0 else status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Hosts made of Linux network namespaces, for tests/test_multi_host.py.

A `Network` is a bridge in the root namespace with a /24 of its own (picked from
100.64.0.0/10 by the test run's pid, so parallel runs do not collide) and one namespace
per host, each joined to the bridge by a veth pair and given a hostname of its own (a UTS
namespace per process, so Celery's `worker@%h` names differ). The root namespace is the
data host: this machine's PostgreSQL and Redis listen on 127.0.0.1 only, so an HAProxy in
TCP mode bound to the bridge's address forwards to them. Every name carries the pid;
`Network.close()` kills what runs in the namespaces and removes them, the bridge and the
files, and `remove_stale()` clears what a run killed before its clean-up left behind
(namespaces and their processes, the bridge, the data proxy, the files).
"""

from __future__ import annotations

import contextlib
import glob
import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy.engine import make_url

from tests.support import ROOT
from tests.support.processes import BIN, procfile
from tests.support.waiting import wait_for

PREFIX = "orch-mh"  # namespaces: orch-mh<pid>-<host>; bridge: mh<pid>br; veths: mh<pid>v<n>
DIRECTORY_PREFIX = "orchestrator-multi-host-"  # + <pid>-: configs, logs, the hosts' TMPDIRs


def unavailable() -> str | None:
    """Why namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    for tool in ("ip", "unshare", "haproxy"):
        if shutil.which(tool) is None:
            hint = " (make test installs it: apt-get install haproxy)" if tool == "haproxy" else ""
            return f"`{tool}` is not installed{hint}"
    probe = f"{PREFIX}{os.getpid()}-probe"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str) -> str:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def remove_stale() -> None:
    """What runs whose pid is gone left (killed before their clean-up): namespaces and
    their processes, the bridge and veths (a veth can outlive its namespace), the data
    proxy and the files."""
    for line in _ip("netns", "list").splitlines():
        name = line.split()[0] if line.strip() else ""
        match = re.fullmatch(rf"{PREFIX}(\d+)-.+", name)
        if match and not _alive(int(match.group(1))):
            _kill_namespace(name)
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
    for line in _ip("-o", "link", "show").splitlines():
        match = re.search(r"^\d+: (mh(\d+)(?:br|v\d+))[:@]", line)
        if match and not _alive(int(match.group(2))):
            subprocess.run(["ip", "link", "del", match.group(1)], capture_output=True)
    for directory in glob.glob(os.path.join(tempfile.gettempdir(), f"{DIRECTORY_PREFIX}*")):
        match = re.match(rf"{DIRECTORY_PREFIX}(\d+)-", os.path.basename(directory))
        if match and not _alive(int(match.group(1))):
            _kill_processes_naming(directory)  # its data proxy, in the root namespace
            shutil.rmtree(directory, ignore_errors=True)


def _kill_processes_naming(directory: str) -> None:
    for cmdline in glob.glob("/proc/[0-9]*/cmdline"):
        with contextlib.suppress(OSError), open(cmdline, "rb") as handle:
            if directory.encode() in handle.read():
                os.kill(int(cmdline.split("/")[2]), signal.SIGKILL)


def _namespace_pids(namespace: str) -> list[int]:
    result = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True)
    return [int(pid) for pid in result.stdout.split()]


def _kill_namespace(namespace: str) -> None:
    for pid in _namespace_pids(namespace):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 of 100.64.0.0/10 that no interface here is in, the first tried chosen by pid."""
    used = [
        ipaddress.ip_interface(address).network
        for address in re.findall(r"inet (\S+)", _ip("-o", "-4", "addr", "show"))
    ]
    for step in range(64 * 256):
        index = (os.getpid() + step) % (64 * 256)
        subnet = ipaddress.ip_network(f"100.{64 + index // 256}.{index % 256}.0/24")
        if not any(subnet.overlaps(network) for network in used):
            return subnet
    raise RuntimeError("no free /24 in 100.64.0.0/10")


def wait_for_port(address: str, port: int, timeout: float = 15) -> None:
    def accepts():
        with contextlib.suppress(OSError), socket.create_connection((address, port), timeout=1):
            return True
        return False

    wait_for(accepts, timeout=timeout, interval=0.1)


class Host:
    """A namespace on the bridge: its address, and the processes started in it."""

    def __init__(self, network: Network, name: str, address: str, veth: str) -> None:
        self.network = network
        self.name = name
        self.namespace = f"{PREFIX}{network.pid}-{name}"
        self.address = address
        self.veth = veth
        self.directory = os.path.join(network.directory, name)  # TMPDIR, logs, config
        self.processes: list[subprocess.Popen] = []

    def popen(self, argv: list[str], log_name: str, env: dict | None = None) -> subprocess.Popen:
        """`argv` in this host's namespace under its hostname, in a process group of its
        own, its output in `log_name` under the host's directory."""
        log_path = os.path.join(self.directory, f"{log_name}.log")
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                ["ip", "netns", "exec", self.namespace, "unshare", "--uts", "--", *argv],
                cwd=ROOT,
                env=env or os.environ,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        process.log_path = log_path
        process.host = self
        self.processes.append(process)
        return process

    def start(self, name: str, extra_args: str = "", **extra_env: str) -> subprocess.Popen:
        """The Procfile's `name` line in this host, on the network's data host."""
        env = {
            **os.environ,
            "PATH": f"{BIN}:{os.environ['PATH']}",
            "TMPDIR": self.directory,  # gunicorn's and Celery's files go where close() looks
            "LOG_LEVEL": "WARNING",
            **self.network.environment,
            **extra_env,
        }
        line = procfile()[name].strip()
        command = f"hostname {self.name} && exec {line} {extra_args}"
        return self.popen(["bash", "-c", command], name, env)

    def kill(self) -> None:
        """SIGKILL every process in the namespace, as when the host loses power."""
        _kill_namespace(self.namespace)
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM to each process group started here, then SIGKILL to what is left."""
        for process in self.processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
        self.kill()


class Network:
    """The bridge, the data host's proxy, and the hosts; `close()` removes all of it."""

    def __init__(self, settings) -> None:
        self.pid = os.getpid()
        self.bridge = f"mh{self.pid}br"
        self.subnet = _free_subnet()
        addresses = self.subnet.hosts()
        self.data_address = str(next(addresses))
        self._addresses = addresses
        self.directory = tempfile.mkdtemp(prefix=f"{DIRECTORY_PREFIX}{self.pid}-")
        self.hosts: dict[str, Host] = {}
        self._root_processes: list[subprocess.Popen] = []
        self.settings = settings
        self.environment: dict[str, str] = {}

    def open(self) -> Network:
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.data_address}/{self.subnet.prefixlen}", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        self._start_data_proxy()
        return self

    def _start_data_proxy(self) -> None:
        """HAProxy in TCP mode on the bridge's address: PostgreSQL, Redis (and RabbitMQ when
        the run's broker is one) at their usual ports, as if they ran on this host."""
        database = make_url(self.settings.database_url)
        targets = {
            "postgres": (database.host, database.port or 5432),
            "redis": _host_port(self.settings.redis_url, 6379),
        }
        broker = self.settings.celery_broker_url
        if broker:
            targets["broker"] = _host_port(broker, 5672)
        listens = "\n".join(
            f"listen {name}\n    bind {self.data_address}:{port}\n    server {name} {host}:{port}\n"
            for name, (host, port) in targets.items()
        )
        config = DATA_PROXY_CONFIG.format(listens=listens)
        path = os.path.join(self.directory, "data-proxy.cfg")
        with open(path, "w") as handle:
            handle.write(config)
        log_path = os.path.join(self.directory, "data-proxy.log")
        with open(log_path, "ab") as log:
            proxy = subprocess.Popen(
                ["haproxy", "-db", "-f", path], stdout=log, stderr=subprocess.STDOUT
            )
        proxy.log_path = log_path
        self._root_processes.append(proxy)
        for _name, (_host, port) in targets.items():
            wait_for_port(self.data_address, port)
        self.environment = {
            "DATABASE_URL": database.set(host=self.data_address).render_as_string(
                hide_password=False
            ),
            "REDIS_URL": _with_host(self.settings.redis_url, self.data_address),
            "CELERY_BROKER_URL": _with_host(broker, self.data_address) if broker else "",
        }

    def add_host(self, name: str) -> Host:
        host = Host(self, name, str(next(self._addresses)), f"mh{self.pid}v{len(self.hosts)}")
        os.makedirs(host.directory)
        self.hosts[name] = host
        _ip("netns", "add", host.namespace)
        _ip("link", "add", host.veth, "type", "veth", "peer", "name", "eth0", "netns",
            host.namespace)  # fmt: skip
        _ip("link", "set", host.veth, "master", self.bridge, "up")
        _ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", "eth0")
        _ip("-n", host.namespace, "link", "set", "eth0", "up")
        _ip("-n", host.namespace, "link", "set", "lo", "up")
        return host

    def close(self) -> None:
        """Everything `open()` and `add_host()` made, whatever state it is in."""
        for host in self.hosts.values():
            with contextlib.suppress(Exception):
                host.stop()
        for process in self._root_processes:
            if process.poll() is None:
                process.kill()
            process.wait()
        for host in self.hosts.values():
            _kill_namespace(host.namespace)
            subprocess.run(["ip", "netns", "del", host.namespace], capture_output=True)
            subprocess.run(["ip", "link", "del", host.veth], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        shutil.rmtree(self.directory, ignore_errors=True)

    def leftovers(self) -> list[str]:
        """What of this network still exists (for the clean-up's own check)."""
        namespaces = [h.namespace for h in self.hosts.values()]
        listed = _ip("netns", "list")
        left = [name for name in namespaces if re.search(rf"^{re.escape(name)}\b", listed, re.M)]
        links = _ip("-o", "link", "show")
        left += [link for link in re.findall(r"^\d+: ([^:@]+)", links, re.M) if
                 link == self.bridge or link.startswith(f"mh{self.pid}v")]  # fmt: skip
        if os.path.exists(self.directory):
            left.append(self.directory)
        return left


def _host_port(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


def _with_host(url: str, host: str) -> str:
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    port = f":{parts.port}" if parts.port else ""
    netloc = f"{credentials}@{host}{port}" if credentials else f"{host}{port}"
    return urlunsplit(parts._replace(netloc=netloc))


# Long timeouts: pooled database connections and Celery's broker connections sit idle.
DATA_PROXY_CONFIG = """\
global
    maxconn 1000
defaults
    mode tcp
    timeout connect 2s
    timeout client 1h
    timeout server 1h
{listens}"""


def load_balancer_config(
    *, port: int, web: dict[str, str], websocket: dict[str, str] | None = None
) -> str:
    """HAProxy in HTTP mode: `web` (name -> address:port) for the API, round robin;
    /ws to `websocket` (default: the same servers), least connections, held open as
    tunnels. Servers are checked on /ready every 500 ms; a request to a server that
    refuses the connection is sent to another one. Each answer says which server gave
    it (X-Served-By)."""
    websocket = websocket or web
    shared = websocket is web

    def servers(members: dict[str, str], backend: str) -> str:
        lines = []
        for name, address in members.items():
            check = f"track web/{name}" if shared and backend == "websockets" else "check"
            lines.append(f"    server {name} {address} {check}")
        return "\n".join(lines)

    return f"""\
global
    maxconn 4000
defaults
    mode http
    option redispatch 1
    retries 3
    timeout connect 2s
    timeout client 60s
    timeout server 65s
    timeout http-request 10s
    timeout tunnel 1h
    default-server inter 500ms fall 2 rise 1
frontend api
    bind 0.0.0.0:{port}
    use_backend websockets if {{ path_beg /ws }}
    default_backend web
backend web
    balance roundrobin
    option httpchk GET /ready
    http-check expect status 200
    http-response set-header X-Served-By %s
{servers(web, "web")}
backend websockets
    balance leastconn
    option httpchk GET /ready
    http-check expect status 200
    http-response set-header X-Served-By %s
{servers(websocket, "websockets")}
"""

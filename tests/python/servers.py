"""Real servers for the Python tests, on free loopback ports in temporary directories.

The Python twin of the Rust ``testkit`` crate: each helper starts one server and stops it
(and removes its directory) when the ``with`` block ends. Nothing here ever talks to a
server the tests did not start, and nothing listens beyond 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _need(program: str, package: str) -> str:
    path = shutil.which(program)
    if path is None:
        raise RuntimeError(f"{program} is not installed (Debian package {package}); run scripts/install-system-deps.sh")
    return path


def _wait_for(probe: Callable[[], bool], proc: subprocess.Popen[bytes], what: str, log: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        with contextlib.suppress(OSError):
            if probe():
                return
        time.sleep(0.05)
    tail = ""
    with contextlib.suppress(OSError), open(log, errors="replace") as f:
        tail = "".join(f.readlines()[-20:])
    proc.kill()
    proc.wait(10)
    raise RuntimeError(f"{what} did not start:\n{tail}")


def _talk(port: int, request: bytes, expect: bytes) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
        s.sendall(request)
        return s.recv(64).startswith(expect)


@dataclass
class Server:
    """A running server: its process, port, directory and the URL polycache opens."""

    proc: subprocess.Popen[bytes]
    port: int
    dir: str
    url: str
    extra: dict[str, str] = field(default_factory=dict)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def _as_unprivileged() -> dict[str, object]:
    """Popen arguments that drop root, for servers that refuse to run as root."""
    if os.geteuid() != 0:
        return {}
    return {"user": "nobody", "group": "nogroup" if _group_exists("nogroup") else "nobody"}


def _group_exists(name: str) -> bool:
    import grp

    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


@contextlib.contextmanager
def redis_server(*config: str) -> Iterator[Server]:
    """``redis-server`` on a free port; extra ``config`` lines such as ``"requirepass x"``."""
    exe = _need("redis-server", "redis-server")
    d = tempfile.mkdtemp(prefix="polycache-redis-")
    port = free_port()
    log = os.path.join(d, "redis.log")
    args = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", d, "--logfile", log, "--unixsocket", os.path.join(d, "redis.sock"), "--unixsocketperm", "700"]
    for line in config:
        key, _, value = line.partition(" ")
        args += [f"--{key}", value]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: _talk(port, b"PING\r\n", b"+PONG") or _talk(port, b"PING\r\n", b"-NOAUTH"), proc, "redis-server", log)
        yield Server(proc, port, d, f"redis://127.0.0.1:{port}/0", {"socket": os.path.join(d, "redis.sock")})
    finally:
        proc.kill()
        proc.wait(10)
        shutil.rmtree(d, ignore_errors=True)


@contextlib.contextmanager
def redis_sentinel(master_name: str = "mymaster") -> Iterator[Server]:
    """A master, one replica and one sentinel watching them as ``master_name``.

    ``url`` is ``redis+sentinel://127.0.0.1:SENTINEL/<master_name>/0``; ``extra`` holds
    the ports of the ``master``, ``replica`` and ``sentinel``. ``redis-sentinel`` is used
    when installed, else ``redis-server --sentinel`` (the same program).
    """
    with redis_server() as master, redis_server(f"replicaof 127.0.0.1 {master.port}") as replica:
        d = tempfile.mkdtemp(prefix="polycache-sentinel-")
        port = free_port()
        conf = os.path.join(d, "sentinel.conf")
        log = os.path.join(d, "sentinel.log")
        with open(conf, "w") as f:
            f.write(f"port {port}\nbind 127.0.0.1\ndir {d}\nlogfile {log}\n"
                    f"sentinel monitor {master_name} 127.0.0.1 {master.port} 1\n"
                    f"sentinel down-after-milliseconds {master_name} 500\n"
                    f"sentinel failover-timeout {master_name} 2000\n")
        exe = shutil.which("redis-sentinel")
        args = [exe, conf] if exe else [_need("redis-server", "redis-server"), conf, "--sentinel"]
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ask = f"*3\r\n$8\r\nSENTINEL\r\n$23\r\nGET-MASTER-ADDR-BY-NAME\r\n${len(master_name)}\r\n{master_name}\r\n"
        try:
            _wait_for(lambda: _talk(port, ask.encode(), b"*2"), proc, "redis-sentinel", log)
            url = f"redis+sentinel://127.0.0.1:{port}/{master_name}/0"
            extra = {"master": str(master.port), "replica": str(replica.port), "sentinel": str(port)}
            yield Server(proc, port, d, url, extra)
        finally:
            proc.kill()
            proc.wait(10)
            shutil.rmtree(d, ignore_errors=True)


def _redis_command(port: int, *args: str) -> bytes:
    """One command to the Redis on ``port``, its reply's first read (small replies only)."""
    request = f"*{len(args)}\r\n".encode()
    for arg in args:
        request += f"${len(arg.encode())}\r\n".encode() + arg.encode() + b"\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request)
        return s.recv(65536)


@contextlib.contextmanager
def redis_cluster() -> Iterator[Server]:
    """A Redis Cluster of three primaries (no replicas), the slots split in thirds.

    ``url`` is ``redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3``; ``extra`` holds
    the ``ports`` (comma-separated). Returns once every node reports ``cluster_state:ok``.
    """
    config = ("cluster-enabled yes", "cluster-config-file nodes.conf", "cluster-node-timeout 5000")
    with contextlib.ExitStack() as stack:
        # Explicit bus ports: the default, the port + 10000, does not exist above 55535.
        bus_ports = [free_port() for _ in range(3)]
        nodes = [stack.enter_context(redis_server(*config, f"cluster-port {bus}")) for bus in bus_ports]
        for i, node in enumerate(nodes):
            first, last = 16384 // 3 * i, (16384 if i == 2 else 16384 // 3 * (i + 1)) - 1
            assert _redis_command(node.port, "CLUSTER", "ADDSLOTSRANGE", str(first), str(last)).startswith(b"+OK")
            _redis_command(node.port, "CLUSTER", "SET-CONFIG-EPOCH", str(i + 1))
        for node, bus in zip(nodes[1:], bus_ports[1:]):
            _redis_command(nodes[0].port, "CLUSTER", "MEET", "127.0.0.1", str(node.port), str(bus))

        def ok() -> bool:
            return all(b"cluster_state:ok" in _redis_command(n.port, "CLUSTER", "INFO") for n in nodes)

        _wait_for(ok, nodes[0].proc, "the redis cluster", os.path.join(nodes[0].dir, "redis.log"), timeout=30)
        ports = ",".join(str(n.port) for n in nodes)
        url = "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in nodes)
        yield Server(nodes[0].proc, nodes[0].port, nodes[0].dir, url, {"ports": ports})


@contextlib.contextmanager
def memcached_server(unix_socket: bool = False) -> Iterator[Server]:
    """``memcached`` on a free port (or a unix socket in its directory)."""
    exe = _need("memcached", "memcached")
    d = tempfile.mkdtemp(prefix="polycache-memcached-")
    os.chmod(d, 0o777)
    port = free_port()
    log = os.path.join(d, "memcached.log")
    sock = os.path.join(d, "mc.sock")
    args = [exe, "-U", "0", "-m", "64"]
    args += ["-s", sock] if unix_socket else ["-l", "127.0.0.1", "-p", str(port)]
    if os.geteuid() == 0:
        args += ["-u", "nobody"]
    with open(log, "wb") as logf:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT)

    def probe() -> bool:
        if unix_socket:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(1)
                s.connect(sock)
                s.sendall(b"version\r\n")
                return s.recv(64).startswith(b"VERSION")
        return _talk(port, b"version\r\n", b"VERSION")

    try:
        _wait_for(probe, proc, "memcached", log)
        # A socket path is absolute, so its URL reads memcached:///path/to/mc.sock.
        url = f"memcached://{sock}" if unix_socket else f"memcached://127.0.0.1:{port}"
        yield Server(proc, port, d, url, {"socket": sock})
    finally:
        proc.kill()
        proc.wait(10)
        shutil.rmtree(d, ignore_errors=True)


def _postgres_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]))
    if not candidates:
        raise RuntimeError(f"{name} is not installed (Debian package postgresql); run scripts/install-system-deps.sh")
    return candidates[-1]


@contextlib.contextmanager
def postgres_server() -> Iterator[Server]:
    """A private PostgreSQL cluster (initdb in a temp dir), run unprivileged when we are root."""
    d = tempfile.mkdtemp(prefix="polycache-pg-")
    os.chmod(d, 0o777)
    data = os.path.join(d, "data")
    port = free_port()
    log = os.path.join(d, "postgres.log")
    drop = _as_unprivileged()
    subprocess.run([_postgres_bin("initdb"), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8",
                    "--locale=C", "-D", data], check=True, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **drop)  # type: ignore[call-overload]
    with open(log, "wb") as logf:
        os.chmod(log, 0o666)
        proc = subprocess.Popen([_postgres_bin("postgres"), "-D", data, "-p", str(port), "-k", d,
                                 "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                                 "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
                                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, **drop)  # type: ignore[call-overload]

    def probe() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            pass
        ready = subprocess.run([_postgres_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        return ready.returncode == 0

    try:
        _wait_for(probe, proc, "postgres", log, timeout=30)
        yield Server(proc, port, d, f"postgres://postgres@127.0.0.1:{port}/postgres")
    finally:
        # SIGINT is PostgreSQL's fast shutdown: SIGTERM (smart) would wait for every client
        # still connected, e.g. a cache a test left open, and outlive the wait below.
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        shutil.rmtree(d, ignore_errors=True)

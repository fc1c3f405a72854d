"""Runs as the unprivileged test user: starts the bwrap runtime and reports what it saw as JSON.

Usage: python bwrap_user_driver.py MODE '{"image": ..., ...}' where MODE is
  serve  start a server, ask it `queries` (stand-in commands), stop it unless `hold`
  fail   start a server expected to die; report its exit code and output tail
  ps     list_servers();  cleanup  cleanup_stale()
Each report is one JSON line on stdout.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import sys
import time
from pathlib import Path

from dacbench_remote._sys.sockets import new_socket_path
from dacbench_remote.host.servers import cleanup_stale, list_servers
from dacbench_remote.runtimes.bwrap import BwrapRuntime


def emit(report: dict) -> None:
    print(json.dumps(report), flush=True)


def accepts(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        try:
            client.connect(str(path))
        except OSError:
            return False
    return True


def talk(path: Path, line: str) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(10)
        client.connect(str(path))
        client.sendall(line.encode() + b"\n")
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = client.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer.decode().rstrip("\n")


def runtime(args: dict) -> BwrapRuntime:
    return BwrapRuntime(args["image"], use_fuse=False, extract_cache=args["cache"],
                        env=args.get("env"), binds=args.get("binds", ()))


def serve(args: dict) -> None:
    started = time.monotonic()
    rt = runtime(args)
    socket_path = new_socket_path()
    server = rt.start(socket_path)
    wanted = [socket_path] + ([Path(f"{socket_path}.data")] if args.get("real_server") else [])
    deadline = time.monotonic() + 120
    while not all(p.exists() and accepts(p) for p in wanted):
        if not server.alive() or time.monotonic() > deadline:
            emit({"error": "server did not come up", "tail": server.output_tail()})
            server.stop()
            sys.exit(1)
        time.sleep(0.005)
    up = time.monotonic() - started
    directory, root = socket_path.parent.stat(), socket_path.parent.parent.stat()
    report = {
        "driver_pid": os.getpid(),
        "server_pid": server.pid,
        "socket": str(socket_path),
        "socket_uid": socket_path.stat().st_uid,
        "socket_dir_mode": oct(directory.st_mode & 0o777),  # this server's own directory
        "socket_dir_uid": directory.st_uid,
        "socket_root_mode": oct(root.st_mode & 0o777),
        "socket_root_uid": root.st_uid,
        "up_seconds": up,
        "describe": rt.describe(),
        "answers": {q: talk(socket_path, q) for q in args.get("queries", [])},
    }
    emit(report)
    if args.get("hold"):
        time.sleep(3600)
    server.stop()
    emit({"after_stop_alive": server.alive(), "socket_exists": socket_path.exists(),
          "data_socket_exists": Path(f"{socket_path}.data").exists(),
          "socket_dir_exists": socket_path.parent.exists()})


def fail(args: dict) -> None:
    rt = runtime(args)
    server = rt.start(new_socket_path())
    server.wait_gone(60)
    emit({"returncode": server.process.poll(), "tail": server.output_tail()})
    server.stop()


def main() -> None:
    mode, args = sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    if mode == "serve":
        serve(args)
    elif mode == "fail":
        fail(args)
    elif mode == "ps":
        emit({"servers": [dataclasses.asdict(s) for s in list_servers()]})
    elif mode == "cleanup":
        emit(dataclasses.asdict(cleanup_stale(Path(args["cache"]) if "cache" in args else None)))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()

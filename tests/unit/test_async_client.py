"""orchestrator.jobs.async_client across a Redis restart (its own redis-server)."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import redis

from orchestrator.cli.launcher import redis_server
from orchestrator.cli.tritonserver import free_port
from orchestrator.jobs import async_client


def _start(port: int, folder: Path) -> subprocess.Popen[bytes]:
    args = ["--bind", "127.0.0.1", "--port", str(port), "--dir", str(folder), "--save", ""]
    process = subprocess.Popen([redis_server(), *args], stdout=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            return process
        except redis.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def test_pooled_connections_work_again_after_redis_restarts(tmp_path: Path) -> None:
    port = free_port()

    async def run() -> None:
        server = _start(port, tmp_path)
        client = async_client(f"redis://127.0.0.1:{port}/0", socket_timeout=5)
        try:
            # Two connections in the pool, as concurrent searches leave them.
            await asyncio.gather(client.lpush("a", 1), client.blpop(["b"], timeout=0.2))
            server.terminate()
            server.wait()
            server = _start(port, tmp_path)
            await client.lpush("reply", "x")
            assert await client.blpop(["reply"], timeout=1) == (b"reply", b"x")
        finally:
            await client.aclose()
            server.terminate()
            server.wait()

    asyncio.run(run())

"""``lockgate demo``'s built-in target through a real gateway node, driven by real OpenSSH
clients: no exec loses its output, file transfers work as on a real sshd (exit status 0,
absolute paths), and the target leaves no coroutine un-awaited behind."""

from __future__ import annotations

import asyncio
import gc
import os
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.app import Node
from gateway.demo import DEMO_RULE, DEMO_TARGET, DEMO_USER, provision, start_demo_target
from tests.nodes import start_test_node
from tests.target import ssh_argv

RUNS = 200
AT_ONCE = 8


@dataclass
class Demo:
    node: Node
    key: Path
    login: str
    home: Path

    def ssh(self, *command: str) -> list[str]:
        return [*ssh_argv(self.node.ssh_port, self.key, self.login), *command]

    def scp(self, *args: str) -> list[str]:
        options = ssh_argv(self.node.ssh_port, self.key, "x")[3:-1]  # the -i and -o options
        return ["scp", "-P", str(self.node.ssh_port), *options, *args]

    def remote(self, path: str) -> str:
        return f"{self.login}@127.0.0.1:{path}"


async def run(argv: list[str], stdin: bytes = b"") -> tuple[int, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), 60)
    return proc.returncode or 0, out, err


@pytest.fixture
async def demo(tmp_path: Path) -> AsyncIterator[Demo]:
    """A node on SQLite, as ``lockgate demo`` runs by default (the demo target is under test
    here, not the database), with the demo target, user and rule provisioned as the demo does."""
    node = await start_test_node(
        f"sqlite+aiosqlite:///{tmp_path}/demo.db",
        tmp_path,
        name="demo-node",
        rules=(DEMO_RULE,),
        recordings_path=tmp_path / "rec",
    )
    # Only the data path is under test: 200 indexer processes would only slow the runs down.
    node.gateway.recorder.on_sealed = None
    home = tmp_path / "demo-home"
    acceptor, port, host_key, secret = await start_demo_target(home)
    try:
        key = await provision(node.services, tmp_path / "data", port, host_key, secret)
        account = secret.split("\0", 1)[0]
        yield Demo(node, key, f"{DEMO_USER}+{account}@{DEMO_TARGET}", home)
    finally:
        acceptor.close()
        await node.stop("test finished")


async def test_demo_exec_never_loses_output(demo: Demo) -> None:
    """The same command 200 times, each its own SSH session through the gateway: every run
    prints its line and exits 0 (the target once exited before its output was forwarded)."""
    limit = asyncio.Semaphore(AT_ONCE)

    async def one(i: int) -> tuple[int, int, bytes, bytes]:
        async with limit:
            status, out, err = await run(demo.ssh(f"echo demo-{i}"))
        return i, status, out, err

    results = await asyncio.gather(*(one(i) for i in range(RUNS)))
    wrong = [
        (i, s, o, e) for i, s, o, e in results if (s, o, e) != (0, f"demo-{i}\n".encode(), b"")
    ]
    assert wrong == [], f"{len(wrong)} of {RUNS} runs lost or changed their output: {wrong[:3]}"


async def test_demo_exec_with_input_leaves_nothing_unawaited(demo: Demo) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        status, out, err = await run(demo.ssh("cat; echo done"), stdin=b"typed input\n")
        assert (status, out, err) == (0, b"typed input\ndone\n", b"")
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)] == []


async def test_demo_scp_and_sftp_work_with_relative_and_absolute_paths(
    demo: Demo, tmp_path: Path
) -> None:
    local = tmp_path / "upload.txt"
    local.write_bytes(b"uploaded through the gateway\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    # scp (the SFTP protocol, as OpenSSH 9 does by default) to the home and to an absolute path
    for destination, arrived in (
        ("", demo.home / "upload.txt"),
        (f"{elsewhere}/absolute.txt", elsewhere / "absolute.txt"),
    ):
        status, _, err = await run(demo.scp(str(local), demo.remote(destination)))
        assert (status, err) == (0, b""), err
        assert arrived.read_bytes() == local.read_bytes()
    # legacy scp -O and a download
    status, _, err = await run(demo.scp("-O", str(local), demo.remote(f"{elsewhere}/legacy.txt")))
    assert (status, err) == (0, b""), err
    assert (elsewhere / "legacy.txt").read_bytes() == local.read_bytes()
    status, _, err = await run(demo.scp(demo.remote("README"), str(tmp_path / "README")))
    assert (status, err) == (0, b""), err
    assert b"Lockgate demo target" in (tmp_path / "README").read_bytes()

    # sftp starts in the demo home, where the shell starts too
    sftp = ["sftp", *demo.scp()[1:], "-b", "-", f"{demo.login}@127.0.0.1"]
    status, out, err = await run(sftp, stdin=f"pwd\nput {local} {elsewhere}/sftp.txt\n".encode())
    assert status == 0, err
    assert f"Remote working directory: {demo.home.resolve()}".encode() in out
    assert (elsewhere / "sftp.txt").exists()
    status, out, _ = await run(demo.ssh("pwd"))
    assert out.decode().strip() == os.fspath(demo.home.resolve())

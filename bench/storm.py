"""Key logins during a storm of wrong passwords. Not a test: prints a table.

    python -m bench.storm [--quick] [--attempts 1000] [--addresses 50] [--database-url URL]

Starts its own sshd and ``lockgate serve`` (as ``bench.ssh`` does; root needed), then sends
wrong passwords for many names from many loopback addresses (127.0.1.x) with asyncssh
clients, as fast as the gateway answers, while a real OpenSSH client logs in with its key
every half second. Reports the key login's time before and during the storm and how the
storm's attempts were answered.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import asyncssh

from bench.ssh import Setup, pct


async def wrong_password(s: Setup, name: str, source: str) -> str:
    try:
        async with asyncio.timeout(15):
            async with asyncssh.connect(
                "127.0.0.1",
                s.gw_port,
                username=name,
                password="wrong-password-123",
                known_hosts=None,
                client_keys=None,
                agent_path=None,
                preferred_auth="password",
                local_addr=(source, 0),
            ):
                return "accepted?!"
    except asyncssh.PermissionDenied:
        return "refused"
    except TimeoutError:
        return "no answer in 15 s"
    except (OSError, asyncssh.Error):
        return "connection closed"


async def key_login(s: Setup) -> float:
    start = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *s.ssh(True), "true", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    await proc.wait()
    if proc.returncode != 0:
        return float("nan")
    return time.perf_counter() - start


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--attempts", type=int, default=1000)
    parser.add_argument("--addresses", type=int, default=50)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    attempts = min(args.attempts, 300) if args.quick else args.attempts
    addresses = min(args.addresses, 20) if args.quick else args.addresses
    work = Path(tempfile.mkdtemp(prefix="lockgate-storm-"))
    work.chmod(0o755)
    s = Setup(work, args.database_url)
    s.start()
    try:
        before = [await key_login(s) for _ in range(5)]
        results: list[str] = []
        during: list[float] = []

        async def storm() -> None:
            gate = asyncio.Semaphore(100)  # attempts in flight

            async def one(i: int) -> None:
                async with gate:
                    results.append(
                        await wrong_password(s, f"user{i % 200}", f"127.0.1.{i % addresses + 1}")
                    )

            await asyncio.gather(*(one(i) for i in range(attempts)))

        task = asyncio.ensure_future(storm())
        started = time.perf_counter()
        while not task.done():
            during.append(await key_login(s))
            await asyncio.sleep(0.5)
        await task
        elapsed = time.perf_counter() - started
    finally:
        s.stop()
    ok = [d for d in during if d == d]
    print(f"{attempts} wrong passwords from {addresses} addresses in {elapsed:.1f} s")
    print(f"key login before the storm: median {statistics.median(before):.2f} s")
    if ok:
        print(
            f"key login during the storm: median {statistics.median(ok):.2f} s, "
            f"p90 {pct(ok, 0.9):.2f} s, max {max(ok):.2f} s ({len(ok)} logins, "
            f"{len(during) - len(ok)} failed)"
        )
    for answer in sorted(set(results)):
        print(f"  storm attempts {answer}: {results.count(answer)}")


if __name__ == "__main__":
    asyncio.run(main())

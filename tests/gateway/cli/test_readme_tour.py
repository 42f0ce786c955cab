"""The README's five-minute tour, pasted line by line into a shell in an empty directory, as a
newcomer does: every command works as written (the ids the tour names ``REQUEST_ID`` and
``GRANT_ID`` are copied from what the line before printed), and the one the tour says is
refused is refused with status 1."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[3] / "README.md"
IDS = {
    "REQUEST_ID": re.compile(r"\brq-[0-9a-f]{12}\b"),
    "GRANT_ID": re.compile(r"\bgr-[0-9a-f]{12}\b"),
}


def tour_commands() -> list[str]:
    """The tour's shell commands: a here-document and a line continued with ``\\`` stay one."""
    text = README.read_text()
    section = text[text.index("## A five-minute tour") :]
    block = section[section.index("```sh\n") + len("```sh\n") :]
    lines = block[: block.index("```\n")].splitlines()
    commands: list[str] = []
    i = 0
    while i < len(lines):
        command = lines[i]
        i += 1
        while command.rstrip().endswith("\\"):
            command += "\n" + lines[i]
            i += 1
        heredoc = re.search(r"<<'?(\w+)'?", command)
        if heredoc and "<<<" not in command:
            end = heredoc.group(1)
            while lines[i] != end:
                command += "\n" + lines[i]
                i += 1
            command += "\n" + lines[i]
            i += 1
        commands.append(command)
    return commands


def test_the_readme_tour_works_pasted_line_by_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(home / ".ssh" / "id_ed25519")],
        check=True,
    )
    bin_dir = tmp_path / "bin"  # `lockgate` as the console script runs it, from this tree
    bin_dir.mkdir()
    (bin_dir / "lockgate").write_text(f'#!/bin/sh\nexec {sys.executable} -m gateway "$@"\n')
    (bin_dir / "lockgate").chmod(0o755)
    work = tmp_path / "fresh"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKGATE_")}
    env.update(HOME=str(home), PATH=f"{bin_dir}:{env['PATH']}")

    commands = tour_commands()
    assert len(commands) >= 12 and commands[0].startswith("lockgate init")
    seen = {name: "" for name in IDS}
    printed = ""
    for command in commands:
        for name in IDS:
            if name in command:
                assert seen[name], f"{name} is used before any line printed one: {command}"
                command = command.replace(name, seen[name])
        done = subprocess.run(
            ["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True, timeout=120
        )
        expected = 1 if "# refused" in command else 0
        assert done.returncode == expected, (command, done.stdout, done.stderr)
        if expected:
            assert done.stderr.startswith("lockgate: ") and done.stderr.count("\n") == 1
        assert "Traceback" not in done.stdout + done.stderr
        for name, pattern in IDS.items():
            if match := pattern.search(done.stdout):
                seen[name] = match.group(0)
        printed += done.stdout + done.stderr

    assert "otpauth://totp/" in printed  # bob's enrolment, for his web sign-in
    assert seen["GRANT_ID"] and "revoked_at" in printed
    assert "the root password of db01" not in printed

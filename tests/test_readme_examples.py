"""The README's examples work as printed: its command files load as Harken loads them,
and its tests pass when run the way the README says (`python -m pytest` from the
directory that holds `mycommands/`)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from commands.loader import load_commands

README = Path(__file__).resolve().parent.parent / "README.md"
_FILE_HEADER = re.compile(r"# ((?:[\w-]+/)*[\w-]+\.py)\n")


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)


def _test_command() -> list[str]:
    """The arguments of the `python -m pytest ...` line the README says to run."""
    for block in re.findall(r"```sh\n(.*?)```", README.read_text(), re.DOTALL):
        for line in block.splitlines():
            if line.startswith("python -m pytest"):
                return line.partition("#")[0].split()[1:]
    raise AssertionError("the README does not say how to run a command's tests")


def write_examples(project: Path) -> tuple[list[Path], list[Path]]:
    """Write the README's Python examples into `project`: a block that starts with
    `# path.py` goes to that path, any other block with a test to `tests/`."""
    files: list[Path] = []
    tests: list[Path] = []
    for block in _python_blocks():
        header = _FILE_HEADER.match(block)
        if header is not None:
            path = project / header.group(1)
            (tests if path.name.startswith("test_") else files).append(path)
        elif re.search(r"^def test_", block, re.MULTILINE):
            path = project / "tests" / f"test_readme_{len(tests)}.py"
            tests.append(path)
        else:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(block)
    return files, tests


def test_the_readme_command_and_dialog_examples_and_their_tests_pass(tmp_path: Path) -> None:
    project = tmp_path / "project"
    files, tests = write_examples(project)
    assert [p.relative_to(project).as_posix() for p in files] == [
        "mycommands/oncall.py",
        "mycommands/rota.py",
        "mycommands/swap.py",
        "mycommands/deploys.py",
    ]
    assert len(tests) == 3
    # Harken loads them as `command_dirs = ["mycommands"]` would.
    loaded = load_commands([project / "mycommands"], use_entry_points=False)
    assert loaded.problems == []
    assert loaded.registry.by_name("oncall") is not None
    assert loaded.registry.by_name("swap") is not None
    run = subprocess.run(
        [sys.executable, *_test_command()],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    count = sum(len(re.findall(r"^def test_", p.read_text(), re.MULTILINE)) for p in tests)
    assert f"{count} passed" in run.stdout

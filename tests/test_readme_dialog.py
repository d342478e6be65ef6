"""The dialog example in the README works as printed, and so does its test."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from harken.testbot import TestBot

README = Path(__file__).resolve().parent.parent / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)


def test_the_readme_dialog_example_and_its_test_pass(tmp_path: Path) -> None:
    blocks = _python_blocks()
    example = next(b for b in blocks if b.startswith("# mycommands/swap.py"))
    test_code = next(b for b in blocks if "from mycommands.swap import swap" in b)
    path = tmp_path / "swap.py"
    path.write_text(example)
    spec = importlib.util.spec_from_file_location("readme_swap", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    namespace: dict[str, object] = {"swap": module.swap}
    exec(test_code.replace("from mycommands.swap import swap\n", ""), namespace)
    test = next(v for k, v in namespace.items() if k.startswith("test_"))
    bot = TestBot(tmp_path / "memory")
    try:
        test(bot)  # type: ignore[operator]
    finally:
        bot.stop()

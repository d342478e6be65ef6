"""The `harken` command (and `python -m harken`): check the layout, then run the CLI.

The check comes first, before anything imports Harken's top-level packages: a module
that shadows one of them would otherwise fail with a confusing import error.
"""

import sys

from harken.layout import shadowing

EXIT_CONFIG = 2


def main() -> int:
    problem = shadowing()
    if problem is not None:
        print(f"harken: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    from harken.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())

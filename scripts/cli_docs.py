"""Write docs/cli.md, the CLI reference, from the click commands' own ``--help``.

    python scripts/cli_docs.py > docs/cli.md     # or: make docs
    python scripts/cli_docs.py --check           # exit 1 if docs/cli.md differs from the code

Every command and subcommand, in the order ``--help`` lists them, rendered at a fixed width of
80 columns so that the output does not depend on the terminal. tests/test_docs_cli.py fails
when docs/cli.md drifts from the code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "cli.md"
WIDTH = 80

HEADER = """\
# CLI reference

Generated from the commands' own `--help` by `scripts/cli_docs.py` (`make docs`); do not edit
by hand: `tests/test_docs_cli.py` fails when this page differs from the code. What the
commands are for, by task: the [README](../README.md) and the pages it links to.
"""


def _walk(ctx: click.Context) -> Iterator[click.Context]:
    """``ctx`` and the contexts of every command below it, depth first, in --help order."""
    yield ctx
    command = ctx.command
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            yield from _walk(sub.make_context(name, [], parent=ctx, resilient_parsing=True))


def render() -> str:
    """The whole page, as ``docs/cli.md`` should hold it."""
    from soundscape.cli import cli

    root = cli.make_context(
        "soundscape",
        [],
        resilient_parsing=True,
        terminal_width=WIDTH,
        max_content_width=WIDTH,
    )
    contexts = list(_walk(root))
    parts = [HEADER, "## Commands\n"]
    for ctx in contexts[1:]:
        depth = ctx.command_path.count(" ") - 1
        anchor = ctx.command_path.replace(" ", "-")
        parts.append(f"{'  ' * depth}- [{ctx.command_path}](#{anchor})")
    parts.append("")
    for ctx in contexts:
        level = "##" if ctx.parent is None or ctx.parent.parent is None else "###"
        parts.append(f"{level} {ctx.command_path}\n")
        parts.append("```\n" + ctx.command.get_help(ctx).rstrip() + "\n```\n")
    return "\n".join(parts).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if docs/cli.md differs from the code"
    )
    parser.add_argument(
        "--write", action="store_true", help="write docs/cli.md instead of printing it"
    )
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if DOC.exists() and DOC.read_text(encoding="utf-8") == text:
            return 0
        print(f"{DOC} is out of date: run `make docs` and commit it", file=sys.stderr)
        return 1
    if args.write:
        DOC.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

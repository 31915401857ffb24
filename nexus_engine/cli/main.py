"""`nexus` entry point. Each sub-command lives in its own module exposing `register(subparsers)`.

A command module adds its parser and sets `func=run` on it; errors of type NexusError print as a message
with a hint (exit 2), never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from nexus_engine.errors import NexusError

COMMANDS = (
    "nexus_engine.cli.chat_cmd",
    "nexus_engine.cli.towers_cmd",
    "nexus_engine.cli.doctor_cmd",
    "nexus_engine.cli.plan_cmd",
    "nexus_engine.cli.bench_cmd",
    "nexus_engine.cli.route_cmd",
    "nexus_engine.cli.router_cmd",
    "nexus_engine.cli.describe_cmd",
    "nexus_engine.cli.imagine_cmd",
    "nexus_engine.cli.animate_cmd",
    "nexus_engine.cli.search_cmd",
    "nexus_engine.cli.transcribe_cmd",
    "nexus_engine.cli.talk_cmd",
    "nexus_engine.cli.profile_cmd",
    "nexus_engine.cli.train_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nexus", description="Nexus: a local, private, multimodal assistant")
    parser.add_argument("--profile", help="models.toml profile (default: the file's default_profile)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log engine details to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # a command not built yet in this checkout
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR, format="%(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except NexusError as e:
        print(f"nexus: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"  hint: {e.hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nnexus: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

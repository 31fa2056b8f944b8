"""`llmcls <command>`: dispatch only. Each command lives in its own module with `main(argv)`."""

from __future__ import annotations

import os
import sys

from llmcls import __version__
from llmcls.commands import COMMANDS, command_main, command_module
from llmcls.errors import LlmclsError

__all__ = ["COMMANDS", "command_main", "command_module", "main", "usage"]


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [f"usage: llmcls <command> [options]    (llmcls {__version__})", "",
             "Multi-label classification of scientific abstracts: linear, encoder and LLM systems, one metrics table.",
             "", "commands:"]
    lines += [f"  {name:<{width}}  {description}" for name, (_, description) in COMMANDS.items()]
    lines += ["", "`llmcls <command> --help` shows the options of a command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] == "--version":
        print(__version__)
        return 0
    name = argv[0]
    if name not in COMMANDS:
        print(f"llmcls: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    from llmcls.environment import source_digest

    source_digest()  # the code as the command starts (metrics.json's llmcls_source), not as a long run ends
    module = command_module(name)
    command = " ".join(argv[:2]) if argv[1:2] and argv[1] in getattr(module, "SUBCOMMANDS", {}) else name  # data stats
    try:
        return int(command_main(name)(argv[1:]) or 0)
    except LlmclsError as err:
        print(f"llmcls {command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"llmcls {command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader of stdout went away (`llmcls compare ... | head`): nothing more to say, and Python's flush of
        # stdout at exit must not raise again, so stdout is pointed at /dev/null
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141

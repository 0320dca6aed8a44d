"""The typer application: the only place that turns errors into exit codes.

Command modules import their heavy dependencies inside the command functions, so `jueying --help`
pays only for typer.
"""

from __future__ import annotations

import itertools
import sys

import typer

from jueying_cli import __version__
from jueying_cli.errors import ExitCode, JueyingError
from jueying_cli.render.text import SafeWriter, say

app = typer.Typer(
    name="jueying",
    help="See, check, drain and drill a GPU compute cluster. With no inventory, works on this machine.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion; -w and -x complete inventory names
    rich_markup_mode=None,  # plain click help: importing rich would cost ~100 ms on every --help
    pretty_exceptions_enable=False,  # tracebacks with locals could print secrets
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="Exit codes: 0 success; 1 some nodes failed or were unreachable (audit: drift found; capacity: floor not "
    "met); 2 bad usage or bad input file; 130 interrupted. `jueying check` uses Nagios codes (0 OK, 1 WARNING, "
    "2 CRITICAL, 3 UNKNOWN); `jueying drill` adds 3 (aborted by a guard, rolled back) and 4 (rollback failed: "
    "act now).",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"jueying {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Global options."""


def _register() -> None:
    from jueying_cli.cli import audit, capacity, check, drain, drill, exporter, failover, run, status

    status.register(app)
    audit.register(app)
    capacity.register(app)
    check.register(app)
    drain.register(app)
    failover.register(app)
    run.register(app)
    exporter.register(app)
    drill.register(app)


_register()


def _optional_value(argv: list[str], option: str, default: str) -> list[str]:
    """Let `--watch` stand alone (`--watch` = `--watch 2`): click options cannot take an optional value."""
    out = []
    for i, arg in enumerate(argv):
        out.append(arg)
        if arg == "--":
            out.extend(argv[i + 1:])
            break
        if arg == option and (i + 1 == len(argv) or argv[i + 1].startswith("-")):
            out.append(default)
    return out


def _not_utf8(argv: list[str]) -> str | None:
    """The first argument that is not UTF-8 text (Python keeps such bytes as lone surrogates, which could
    be neither stored nor printed), or None."""
    for arg in argv:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            return arg
    return None


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the process exit code. Every message it prints goes through
    render.text, so a hostile argument or error text reaches the terminal escaped."""
    argv = _optional_value(list(sys.argv[1:] if argv is None else argv), "--watch", "2")
    bad = _not_utf8(argv)
    if bad is not None:
        say(f"jueying: argument {bad!r} is not UTF-8 text", err=True)
        return int(ExitCode.BAD_INPUT)
    try:
        result = app(args=argv, prog_name="jueying", standalone_mode=False)
    except KeyboardInterrupt:
        say("jueying: interrupted", err=True)
        return int(ExitCode.INTERRUPTED)
    except JueyingError as exc:
        say(f"jueying: {exc}", err=True)
        _json_error(argv, str(exc), "bad_input" if exc.exit_code == ExitCode.BAD_INPUT else "error")
        return int(exc.exit_code)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.Abort:
        say("jueying: interrupted", err=True)
        return int(ExitCode.INTERRUPTED)
    except typer.TyperException as exc:  # usage errors from typer's vendored click
        show = getattr(exc, "show", None)
        if callable(show):
            show(file=SafeWriter(sys.stderr))
        else:
            say(f"jueying: {exc}", err=True)
        format_message = getattr(exc, "format_message", None)
        _json_error(argv, str(format_message() if callable(format_message) else exc), "usage")
        return int(ExitCode.BAD_INPUT)
    return result if isinstance(result, int) else int(ExitCode.OK)


def _json_error(argv: list[str], message: str, status: str) -> None:
    """With --json, a failed command still prints its envelope (status error), so scripts always get JSON."""
    args = argv[: argv.index("--")] if "--" in argv else argv
    as_json = "--json" in args or "--format=json" in args or any(
        a == "--format" and b.lower() == "json" for a, b in itertools.pairwise(args))
    if not as_json:
        return
    from jueying_cli.render.json import envelope, print_json

    command = next((a for a in args if not a.startswith("-")), "jueying")
    print_json(envelope(command, None, status="error", errors=[{"node": None, "status": status, "message": message}]))

"""`python3 -m jueying_cli.probe`: print this machine's facts document as JSON on stdout."""

from __future__ import annotations

import json
import sys

from jueying_cli.probe import collect


def main(argv: "list[str]") -> int:
    doc = collect(gpus="--no-gpus" not in argv)
    json.dump(doc, sys.stdout, separators=(",", ":") if "--compact" in argv else None,
              indent=None if "--compact" in argv else 2, sort_keys=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

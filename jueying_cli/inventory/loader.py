"""Find and load an inventory: jueying YAML, or an Ansible inventory (INI or YAML) unchanged.

Lookup order: -i/--inventory, $JUEYING_INVENTORY, ./inventory.yaml, $XDG_CONFIG_HOME/jueying/inventory.yaml
(~/.config/...), /etc/jueying/inventory.yaml. None found: the embedded default, this machine only.
Every error names the file, the line and the field, and the CLI exits 2.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

from jueying_cli.errors import BadInputError
from jueying_cli.inventory.ansible import load_ansible_ini, load_ansible_yaml
from jueying_cli.inventory.jueying_yaml import load_jueying_yaml
from jueying_cli.inventory.model import Inventory, Node
from jueying_cli.yamlfile import LocatedDict, line_of, load_yaml, read_text


def default_locations() -> list[Path]:
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return [Path("inventory.yaml"), config_home / "jueying" / "inventory.yaml", Path("/etc/jueying/inventory.yaml")]


def find_inventory(explicit: str | None) -> Path | None:
    """The inventory file to use, or None for the embedded local default. An explicit path must exist."""
    for given, origin in ((explicit, "-i/--inventory"), (os.environ.get("JUEYING_INVENTORY"), "JUEYING_INVENTORY")):
        if given:
            path = Path(given).expanduser()
            if not path.is_file():
                raise BadInputError(f"inventory file not found (from {origin})", path=str(path))
            return path
    for path in default_locations():
        if path.is_file():
            return path
    return None


def local_inventory() -> Inventory:
    """The embedded default: this machine, collected without SSH."""
    name = socket.gethostname()
    return Inventory(nodes={name: Node(name=name, vars={"local": True}, groups=("local",))},
                     groups={"local": (name,)}, source=None)


def load_inventory(explicit: str | None = None) -> Inventory:
    path = find_inventory(explicit)
    if path is None:
        return local_inventory()
    return load_inventory_file(path)


def load_inventory_file(path: Path) -> Inventory:
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        text = read_text(path)
        if suffix in (".ini", ".cfg") or not _looks_like_yaml(text):
            return load_ansible_ini(path, text)
    doc = load_yaml(path)
    if doc is None:
        raise BadInputError("inventory is empty", path=str(path), line=1)
    if not isinstance(doc, LocatedDict):
        raise BadInputError("inventory must be a mapping at the top level", path=str(path), line=line_of(doc))
    if "all" in doc and not ({"nodes", "groups"} & set(doc)):
        return load_ansible_yaml(path, doc)
    return load_jueying_yaml(path, doc)


_YAML_START = re.compile(r"""^(---|%|\{|["']?[\w.\-]+["']?\s*:(\s|$))""")


def _looks_like_yaml(text: str) -> bool:
    """For a file without a telling suffix: YAML if it starts like a mapping (`all:`, `nodes:`, `{`, `---`);
    an Ansible INI file starts with a [section] or, with no section at all, a host line (`gpu01 a=b`)."""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", ";")):
            continue
        return bool(_YAML_START.match(stripped))
    return True


# ---------------------------------------------------------------- names and patterns


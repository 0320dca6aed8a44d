"""Find and load an inventory: jueying YAML, or an Ansible inventory (INI or YAML file, or a directory of
them, with group_vars/ and host_vars/) unchanged.

Lookup order: -i/--inventory, $JUEYING_INVENTORY, ./inventory.yaml, $XDG_CONFIG_HOME/jueying/inventory.yaml
(~/.config/...), /etc/jueying/inventory.yaml. None found: the embedded default, this machine only.
Every error names the file, the line and the field, and the CLI exits 2.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from jueying_cli.errors import BadInputError
from jueying_cli.inventory.ansible_files import YAML_EXTS, load_ansible_inventory, looks_like_yaml
from jueying_cli.inventory.jueying_yaml import load_jueying_yaml
from jueying_cli.inventory.model import Inventory, Node
from jueying_cli.yamlfile import LocatedDict, load_yaml, read_text


def default_locations() -> list[Path]:
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return [Path("inventory.yaml"), config_home / "jueying" / "inventory.yaml", Path("/etc/jueying/inventory.yaml")]


def find_inventory(explicit: str | None) -> Path | None:
    """The inventory file (or Ansible inventory directory) to use, or None for the embedded local default.
    An explicit path must exist."""
    for given, origin in ((explicit, "-i/--inventory"), (os.environ.get("JUEYING_INVENTORY"), "JUEYING_INVENTORY")):
        if given:
            path = Path(given).expanduser()
            if not (path.is_file() or path.is_dir()):
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
    """jueying's YAML format if the file is a YAML mapping of `vars`/`groups`/`nodes` (and not shaped like
    Ansible groups of those names); any other file, and a directory, is an Ansible inventory."""
    if path.is_file() and path.suffix.lower() not in (".ini", ".cfg") and (
            path.suffix.lower() in YAML_EXTS or not path.suffix or looks_like_yaml(read_text(path))):
        try:
            doc = load_yaml(path)
        except BadInputError:
            doc = None  # an INI file without suffix, or a YAML error that the Ansible reader will report
        else:
            if doc is None:
                raise BadInputError("inventory is empty", path=str(path), line=1)
        if isinstance(doc, LocatedDict) and doc:
            return load_jueying_yaml(path, doc) if is_jueying_format(doc) else load_ansible_inventory(path, doc)
    return load_ansible_inventory(path)


_JUEYING_KEYS = {"vars", "groups", "nodes"}
_ANSIBLE_GROUP_KEYS = {"hosts", "vars", "children"}


def is_jueying_format(doc: LocatedDict) -> bool:
    """A top-level `vars`, `groups` or `nodes` key, unless every top-level value is shaped like an Ansible
    group (null, or a mapping of hosts/vars/children only): Ansible groups may be named so too."""
    if not set(doc) & _JUEYING_KEYS:
        return False
    return not all(v is None or (isinstance(v, dict) and set(v) <= _ANSIBLE_GROUP_KEYS) for v in doc.values())

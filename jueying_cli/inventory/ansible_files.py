"""An Ansible inventory on disk, found as ansible-core finds it: one file (YAML, else INI, by the order of its
inventory plugins), or a directory of them, with group_vars/ and host_vars/ beside.

- `inventory/manager.py` `parse_source`: a directory is read entry by entry in sorted order, subdirectories
  too; hidden entries, `group_vars`, `host_vars`, `vars_plugins` and names ending in an ignored extension
  (INVENTORY_IGNORE_EXTS: `.pyc .pyo .swp .bak ~ .rpm .md .txt .rst .orig .cfg .retry`) are skipped.
- Plugin order (INVENTORY_ENABLED `host_list, script, auto, yaml, ini, toml`): a file named `*.yaml`,
  `*.yml`, `*.json` or without extension is read as YAML, and as INI if that fails; any other file as INI.
  jueying runs no inventory script and no plugin (`plugin:` files), and reads no TOML (README).
- `plugins/vars/host_group_vars.py` with `parsing/dataloader.py` `find_vars_files`: beside the inventory
  (the directory itself, or the file's directory), `group_vars/NAME` and `host_vars/NAME` are read from the
  first of `NAME`, `NAME.yml`, `NAME.yaml`, `NAME.json` that exists; a directory there is read whole, in
  sorted order, recursively, skipping hidden names, names ending in `~`, and extensions other than these.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from jueying_cli.errors import BadInputError
from jueying_cli.inventory.ansible import check_ansible_vars, parse_ansible_ini, parse_ansible_yaml
from jueying_cli.inventory.build import InventoryBuilder
from jueying_cli.inventory.model import Inventory
from jueying_cli.yamlfile import LocatedDict, line_of, load_yaml, read_text

IGNORED_NAMES = ("host_vars", "group_vars", "vars_plugins")
IGNORED_EXTS = (".pyc", ".pyo", ".swp", ".bak", "~", ".rpm", ".md", ".txt", ".rst", ".orig", ".cfg", ".retry")
YAML_EXTS = (".yaml", ".yml", ".json")
VARS_EXTS = (".yml", ".yaml", ".json")  # YAML_FILENAME_EXTENSIONS
_YAML_START = re.compile(r"""^(---|%|\{|["']?[\w.\-]+["']?\s*:(\s|$))""")


def load_ansible_inventory(path: Path, doc: LocatedDict | None = None) -> Inventory:
    """An Ansible inventory file or directory, with its group_vars/ and host_vars/. `doc`: the file, already
    read as YAML (the loader reads it to tell jueying's own format apart)."""
    b = InventoryBuilder(path, "{}.children", ansible=True)
    if path.is_dir():
        _read_directory(b, path)
    else:
        read_ansible_file(b, path, doc)
    if not b.order:
        raise BadInputError("inventory defines no hosts", path=str(path), line=None if path.is_dir() else 1)
    add_vars_files(b, path if path.is_dir() else path.parent)
    return b.build()


def ignored(name: str) -> bool:
    """manager.py IGNORED: hidden, group_vars/host_vars/vars_plugins, or an ignored extension."""
    return name.startswith(".") or name in IGNORED_NAMES or name.endswith(IGNORED_EXTS)


def _read_directory(b: InventoryBuilder, directory: Path) -> None:
    try:
        entries = sorted(os.listdir(directory))
    except OSError as exc:
        raise BadInputError(f"cannot read directory: {exc.strerror}", path=str(directory)) from exc
    for name in entries:
        if ignored(name):
            continue
        entry = directory / name
        if entry.is_dir():
            _read_directory(b, entry)
        else:
            read_ansible_file(b, entry)


def read_ansible_file(b: InventoryBuilder, path: Path, doc: LocatedDict | None = None) -> None:
    """One inventory file into `b`: YAML first where Ansible's yaml plugin would try it, INI otherwise."""
    text = read_text(path)
    if text.startswith("#!") and os.access(path, os.X_OK):
        raise BadInputError("an inventory script: jueying does not run inventory scripts (use a static "
                            "inventory, e.g. the script's `--list` output turned into YAML)", path=str(path), line=1)
    if text.startswith("$ANSIBLE_VAULT;"):
        raise BadInputError("encrypted with ansible-vault: jueying cannot read it", path=str(path), line=1)
    if path.suffix == ".toml":
        raise BadInputError("a TOML inventory: jueying reads INI and YAML inventories", path=str(path), line=1)
    looks_yaml = looks_like_yaml(text) and path.suffix.lower() not in (".ini", ".cfg")
    yaml_first = path.suffix in YAML_EXTS or not path.suffix
    if doc is None and (yaml_first or looks_yaml):
        yaml_error: BadInputError | None = None
        try:
            parsed = load_yaml(path)
        except BadInputError as exc:
            yaml_error, parsed = exc, None
        if isinstance(parsed, LocatedDict) and parsed:
            doc = parsed
        elif yaml_error is not None and not yaml_first:  # YAML-looking text, another suffix: jueying's own leniency
            raise yaml_error
        elif yaml_first:  # the yaml plugin failed: the ini plugin comes next, as in Ansible
            try:
                parse_ansible_ini(b, path, text)
            except BadInputError as ini_error:
                if not (looks_yaml or path.suffix in YAML_EXTS):
                    raise
                if yaml_error is not None:
                    raise yaml_error from ini_error
                raise BadInputError("inventory must be a mapping at the top level (of group names)",
                                    path=str(path), line=line_of(parsed) or 1) from ini_error
            return
    if doc is not None:
        parse_ansible_yaml(b, path, doc)
    else:
        parse_ansible_ini(b, path, text)


def looks_like_yaml(text: str) -> bool:
    """Starts like a YAML mapping (`all:`, `gpu:`, `{`, `---`); an INI file starts with a [section] or a host
    line (`gpu01 a=b`). Only to choose which of two errors to show, or for a file with another suffix."""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", ";")):
            continue
        return bool(_YAML_START.match(stripped))
    return False


# ---------------------------------------------------------------- group_vars/ and host_vars/

def add_vars_files(b: InventoryBuilder, basedir: Path) -> None:
    """The host_group_vars plugin's layer, for every group and every host the inventory has."""
    base = Path(os.path.realpath(basedir))
    group_dir, host_dir = base / "group_vars", base / "host_vars"
    if group_dir.is_dir():
        for group in [*b.groups, *(g for g in b.children if g not in b.groups)]:
            values = _vars_for(group_dir, group)
            if values:
                target = b.file_global_vars if group == "all" else b.file_group_vars.setdefault(group, {})
                target.update(values)
    if host_dir.is_dir():
        for name in b.order:
            values = _vars_for(host_dir, name)
            if values:
                b.file_node_vars.setdefault(name, {}).update(values)


def _vars_for(directory: Path, name: str) -> dict[str, object]:
    values: dict[str, object] = {}
    for path in find_vars_files(directory, name):
        values.update(_read_vars_file(path, name))
    return values


def find_vars_files(directory: Path, name: str) -> list[Path]:
    """dataloader.find_vars_files: the first of NAME (file or directory), NAME.yml, NAME.yaml, NAME.json."""
    if name.startswith(os.sep):
        return []
    for ext in ("", *VARS_EXTS):
        candidate = directory / (name + ext)
        if candidate.exists():
            return _dir_vars_files(candidate) if candidate.is_dir() else [candidate]
    return []


def _dir_vars_files(directory: Path) -> list[Path]:
    found: list[Path] = []
    for name in sorted(os.listdir(directory)):
        if name.startswith(".") or name.endswith("~"):
            continue
        entry = directory / name
        ext = os.path.splitext(name)[1]
        if entry.is_dir() and not ext:
            found.extend(_dir_vars_files(entry))
        elif entry.is_file() and (not ext or ext in VARS_EXTS):
            found.append(entry)
    return found


def _read_vars_file(path: Path, entity: str) -> dict[str, object]:
    """A mapping of variables (YAML or JSON) for the group or host `entity`; an empty file counts for
    nothing, as in Ansible. Errors name the variable as `entity.variable`."""
    if read_text(path).startswith("$ANSIBLE_VAULT;"):
        raise BadInputError("encrypted with ansible-vault: jueying cannot read it", path=str(path), line=1)
    doc = load_yaml(path)
    if not doc:
        return {}
    if not isinstance(doc, LocatedDict):
        raise BadInputError("must be a mapping of variable: value", path=str(path), line=line_of(doc) or 1)
    return check_ansible_vars(doc, path, entity, doc.line, doc.key_lines)

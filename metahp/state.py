"""State files that survive crashes, and state checks that refuse a malformed state whole.

Every state file metahp writes goes through ``write_json_atomic`` (a temporary file in the same folder, flushed
and fsynced, then renamed over the target: a crash leaves either the old file or the new one, never half of
one). Every state file metahp reads goes through ``read_json``: a missing, truncated or non-JSON file is a
``StateError`` that names the file. ``load_policies`` restores several meta-policies all-or-nothing.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from metahp.errors import StateError


def write_json_atomic(path: str | os.PathLike, obj: Any, **dumps_options) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (temporary file + fsync + rename, then fsync the folder)."""
    text = json.dumps(obj, **dumps_options)  # serialise first: an unserialisable value fails before any write
    return write_bytes_atomic(path, text.encode())


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a partial one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # KeyboardInterrupt included: never leave the temporary file behind
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_folder(path.parent)
    return path


def fsync_folder(folder: str | os.PathLike) -> None:
    """Make a rename inside ``folder`` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_json(path: str | os.PathLike, what: str = "metahp state") -> Any:
    """Read a JSON state file; any problem is a StateError naming the file and what to do."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise StateError(f"{path}: file not found; pass the checkpoint folder that holds the {what}.") from None
    except (OSError, UnicodeDecodeError) as err:
        raise StateError(f"{path}: cannot read the {what} ({err}).") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise StateError(f"{path}: the {what} is not valid JSON ({err}); the file is truncated or corrupted. "
                         f"Resume from an earlier checkpoint, or delete the file to start this part afresh.") from None


def in_file(path: str | os.PathLike, load: Callable[[], Any]) -> Any:
    """Run ``load()``; a StateError it raises is re-raised with ``path`` in front, so the file is named."""
    try:
        return load()
    except StateError as err:
        raise StateError(f"{path}: {err}") from None


def load_policies(policies: Mapping[str, Any], saved: Any, where: str = "state") -> None:
    """Load ``saved[name]`` into each policy, all or nothing: on any failure every policy is put back."""
    if not isinstance(saved, Mapping):
        raise StateError(f"{where}: expected a mapping of knob name -> policy state, got {type(saved).__name__}.")
    if set(saved) != set(policies):
        raise StateError(f"{where}: the state adapts knobs {sorted(saved)}, this adapter {sorted(policies)}; attach "
                         f"the same knobs as the saved run.")
    backups = {name: policy.state_dict() for name, policy in policies.items()}
    try:
        for name, policy in policies.items():
            try:
                policy.load_state_dict(saved[name])
            except StateError as err:
                raise StateError(f"{where}[{name!r}]: {err}") from None
    except BaseException:
        for name, policy in policies.items():
            policy.load_state_dict(backups[name])
        raise


# -- field checks used by the state validators ------------------------------------------------------------
def require_keys(state: Any, expected: set[str], where: str) -> None:
    """``state`` is a dict with exactly the ``expected`` keys (missing and unexpected keys both named)."""
    if not isinstance(state, dict):
        raise StateError(f"{where} must be a JSON object (dict), got {type(state).__name__}.")
    missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or extra:
        parts = ([f"missing {missing}"] if missing else []) + ([f"unexpected {extra}"] if extra else [])
        raise StateError(f"{where}: {' and '.join(parts)} keys; expected exactly {sorted(expected)}. The state was "
                         f"written by another metahp version or edited by hand.")


def require_int(value: Any, where: str, low: int | None = None, high: int | None = None) -> int:
    """An integer (not a bool) in [low, high)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise StateError(f"{where} must be an integer, got {value!r}.")
    if (low is not None and value < low) or (high is not None and value >= high):
        raise StateError(f"{where}={value} is outside [{low}, {high}).")
    return value


def require_finite(value: Any, where: str, allow_none: bool = False) -> float | None:
    """A finite number (not a bool), or None when ``allow_none``."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise StateError(f"{where} must be a finite number{' or null' if allow_none else ''}, got {value!r}.")
    return float(value)


def check_rng_state(state: Any, where: str = "rng") -> dict:
    """A numpy PCG64 bit-generator state, checked field by field (numpy itself accepts some corrupt ones)."""
    require_keys(state, {"bit_generator", "state", "has_uint32", "uinteger"}, where)
    if state["bit_generator"] != "PCG64":
        raise StateError(f"{where}.bit_generator={state['bit_generator']!r}; metahp's generators are 'PCG64'.")
    require_keys(state["state"], {"state", "inc"}, f"{where}.state")
    require_int(state["state"]["state"], f"{where}.state.state", 0, 1 << 128)
    inc = require_int(state["state"]["inc"], f"{where}.state.inc", 0, 1 << 128)
    if inc % 2 == 0:
        raise StateError(f"{where}.state.inc is even; a PCG64 increment is always odd (the state is corrupted).")
    require_int(state["has_uint32"], f"{where}.has_uint32", 0, 2)
    require_int(state["uinteger"], f"{where}.uinteger", 0, 1 << 32)
    return state


def fsync_tree(folder: str | os.PathLike) -> None:
    """fsync every file under ``folder`` (files written by other libraries, e.g. save_pretrained), then the folder."""
    for root, _, files in os.walk(folder):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                os.fsync(f.fileno())
        fsync_folder(root)


def replace_folder(staging: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Move the complete folder ``staging`` to ``path``, replacing what is there.

    A folder cannot be renamed over a non-empty one atomically, so the old one is first renamed to
    ``<path>.previous``: at every instant either ``path`` or ``<path>.previous`` is a complete checkpoint (the
    loaders name ``.previous`` when ``path`` is missing), and ``.previous`` is removed once ``path`` is in place.
    """
    import shutil

    staging, path = Path(staging), Path(path)
    previous = path.with_name(path.name + ".previous")
    if path.exists():
        if previous.exists():
            shutil.rmtree(previous)
        os.replace(path, previous)
    os.replace(staging, path)
    fsync_folder(path.parent)
    if previous.exists():
        shutil.rmtree(previous)
    return path

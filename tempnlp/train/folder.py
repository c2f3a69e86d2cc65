"""The run folder: one run at a time (a lock file), leftovers of a killed run removed, complete checkpoints told
from ones a kill cut short.

The lock is ``.tempnlp.lock`` in the output folder, created exclusively, holding the PID, host and start time of
the run that owns it. A second run into the same folder stops with who holds it. A lock whose process is gone (a
run killed with -9) is taken over with a message; a lock from another host cannot be checked from here, so it is
reported with the command to remove it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

from transformers.trainer import TRAINER_STATE_NAME

LOCK_FILE = ".tempnlp.lock"
# What tempnlp's atomic writes leave behind when killed: tempfile's ".<name>.<random>.tmp" and save_model's
# ".model.tmp<pid>" / ".model.old<pid>" folders.
LEFTOVER_PATTERNS = (".*.tmp", ".model.tmp*", ".model.old*")


class FolderError(OSError):
    """The output folder cannot be used: it is a file, not writable, or another run holds it."""


def check_writable(folder: Path) -> None:
    """The output folder exists as a folder this process can write into (made if missing)."""
    if folder.exists() and not folder.is_dir():
        raise FolderError(f"--output-dir {folder} is a file, not a folder: choose another --output-dir.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise FolderError(f"--output-dir {folder} cannot be created ({error.strerror}): choose another one.") from error
    if not os.access(folder, os.W_OK | os.X_OK):
        raise FolderError(f"--output-dir {folder} is not writable by this user: choose another --output-dir.")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunLock:
    """``with RunLock(folder, say):`` holds the folder's lock for the run; released on exit, even on an error."""

    def __init__(self, folder: Path, say: Callable[[str], None]) -> None:
        self.path = Path(folder) / LOCK_FILE
        self.say = say
        self.held = False

    def _owner(self) -> dict | None:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # vanished, or half-written by a run killed while taking it

    def acquire(self) -> None:
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(3):
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner is None or (owner.get("host") == record["host"] and not _alive(int(owner.get("pid", -1)))):
                    who = "an unreadable lock" if owner is None else f"process {owner['pid']}, which is gone"
                    self.say(f"output folder: taking over the lock of {who} ({self.path})")
                    self.path.unlink(missing_ok=True)
                    continue
                where = "on this host" if owner.get("host") == record["host"] else f"on host {owner.get('host')}"
                hint = (
                    "Wait for it to finish or stop it"
                    if owner.get("host") == record["host"]
                    else f"If no run is using the folder any more, remove {self.path}"
                )
                raise FolderError(
                    f"{self.path.parent} is in use by another tempnlp run (process {owner.get('pid')} {where}, "
                    f"started {owner.get('started')}). Two runs in one folder would mix their checkpoints. {hint}, "
                    "or choose another --output-dir."
                ) from None
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                json.dump(record, handle)
            self.held = True
            return
        raise FolderError(f"Could not take the lock {self.path}: another run keeps taking it. Try again.")

    def release(self) -> None:
        if self.held:
            owner = self._owner()
            if owner is not None and owner.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def remove_leftovers(folder: Path, say: Callable[[str], None]) -> None:
    """Temp files and folders that a killed run's atomic writes left in the output folder (call under the lock)."""
    found = {path for pattern in LEFTOVER_PATTERNS[1:] for path in folder.glob(pattern)}
    found = sorted(found | set(folder.rglob(LEFTOVER_PATTERNS[0])))
    for path in found:
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    if found:
        say(f"output folder: removed {len(found)} leftover temp file(s) of an interrupted run ({found[0].name}, ...)")


def _safetensors_complete(path: Path) -> bool:
    """The header's declared size and the last tensor's end offset match the file's length."""
    try:
        with path.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
    except (OSError, ValueError, struct.error):
        return False
    ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    return path.stat().st_size == 8 + length + max(ends, default=0)


def incomplete_files(checkpoint: Path) -> list[str]:
    """The files of a checkpoint that a kill cut short: empty, unparseable JSON, a torch archive without its
    closing directory, a safetensors file shorter than its header says. Reads headers and ends only."""
    bad = []
    for path in sorted(checkpoint.rglob("*")):
        if not path.is_file() or path.name.startswith("."):  # a temp file of an interrupted write is not part of it
            continue
        if not _complete(path):
            bad.append(str(path.relative_to(checkpoint)))
    return bad


def _complete(path: Path) -> bool:
    if path.stat().st_size == 0:
        return False
    if path.suffix == ".json":
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
    if path.suffix in (".pt", ".pth", ".bin"):
        return zipfile.is_zipfile(path)
    if path.suffix == ".safetensors":
        return _safetensors_complete(path)
    return True


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Why a checkpoint cannot be resumed from, or None when it is complete."""
    if not (checkpoint / TRAINER_STATE_NAME).is_file():
        return f"it has no {TRAINER_STATE_NAME}"
    bad = incomplete_files(checkpoint)
    return f"{', '.join(bad)} {'is' if len(bad) == 1 else 'are'} empty or cut short" if bad else None

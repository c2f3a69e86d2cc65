"""The run folder: one run at a time (a lock file), leftovers of a killed run removed, complete checkpoints told
from ones a kill cut short.

The lock is an exclusive ``flock`` on ``.tempnlp.lock`` in the output folder, whose text names the PID, host and
start time of the run that holds it. A second run into the same folder stops with who holds it. The kernel
releases the lock when its process ends, so a run killed with -9 leaves nothing stale behind.
"""

from __future__ import annotations

import fcntl
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
# What tempnlp's atomic writes leave behind when killed: tempfile's ".<name>.<random>.tmp" files (anywhere in the
# folder), and save_model's new and previous model folders, set aside next to model/.
TEMP_FILES = ".*.tmp"
NEW_MODEL, OLD_MODEL = ".model.tmp*", ".model.old*"


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


class RunLock:
    """``with RunLock(folder, say):`` holds the folder's lock for the run.

    The lock is an exclusive ``flock`` on ``.tempnlp.lock``, which the kernel releases when the process ends, however
    it ends: a run killed with -9 leaves no stale lock, and a reused PID cannot look like a live owner. The file
    holds the owner's PID, host and start time for the message a second run prints; it stays in the folder,
    emptied, when the run ends (removing it could let two runs lock two different files).
    """

    def __init__(self, folder: Path, say: Callable[[str], None]) -> None:
        self.path = Path(folder) / LOCK_FILE
        self.say = say
        self._handle = None

    def acquire(self) -> None:
        handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held open for the run
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            text = handle.read()
            handle.close()
            try:
                owner = json.loads(text)
            except ValueError:
                owner = {}
            raise FolderError(
                f"{self.path.parent} is in use by another tempnlp run (process {owner.get('pid', '?')} on host "
                f"{owner.get('host', '?')}, started {owner.get('started', '?')}). Two runs in one folder would mix "
                "their checkpoints: wait for it to finish or stop it, or choose another --output-dir."
            ) from None
        handle.seek(0)
        previous = handle.read().strip()
        if previous:  # the record of a run that ended without clearing it: killed
            try:
                self.say(f"output folder: the run that held it (process {json.loads(previous)['pid']}) is gone")
            except (ValueError, KeyError, TypeError):
                self.say("output folder: the run that held it is gone")
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(record))
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            self._handle.seek(0)
            self._handle.truncate()
            self._handle.flush()
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def remove_leftovers(folder: Path, say: Callable[[str], None]) -> None:
    """Temp files and folders that a killed run's atomic writes left in the output folder (call under the lock)."""
    model, news, olds = folder / "model", sorted(folder.glob(NEW_MODEL)), sorted(folder.glob(OLD_MODEL))
    if not model.exists() and olds:
        # killed between moving the old model aside and moving the new one in: the new one was complete
        os.replace((news or olds)[-1], model)
        say(f"output folder: restored model/ from {(news or olds)[-1].name}, left by a run killed while saving it")
    found = sorted({*folder.glob(NEW_MODEL), *folder.glob(OLD_MODEL), *folder.rglob(TEMP_FILES)})
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

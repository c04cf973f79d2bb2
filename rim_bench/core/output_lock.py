"""Output folders: a command never writes over its own inputs, one run writes a folder at a
time, and a folder holds rim-bench's files only.

`refuse_inputs_inside`: a command that reads files and writes into a folder refuses a folder
that is, or holds, one of those files (``rim-bench segment photos --out photos`` would have
replaced the images with label maps).

`hold_output`: a run (`test`, `sweep`, `compare`, `suite`, `segment`) holds its output folder
from its first write to its end through ``<folder>/.rim-bench.lock``, created atomically
(``O_CREAT | O_EXCL``) with the holder's host, pid, process start time, command and start.
A second run on the folder stops with one line naming the holder. The file is removed when
the run ends, by an exception or Ctrl-C too. A lock left by a killed run is taken over only
when its process is provably gone: on this host, its pid is not alive, or now belongs to a
process started at another time (the pid was reused); a lock with a field rim-bench does not
write (a pid that is text or out of range, a start that is not a time) is never taken over.

`claim_output`: a command writes into a folder only if it is new, empty, or holds the marker
(``<folder>/.rim-bench-output.json``) of an earlier run of the same kind of command (``test``,
``segment``, ``report``, ...), which it writes into a folder it claims; so it never replaces a
file it did not write (a user's ``config.yaml``), nor mixes its results with another command's.
`remove_unused` takes back, after a failed run, the folder it made (or its marker alone, in a
folder that was there before); `writing_into` does all three for a command's block.

Nesting: a sweep, comparison or suite holds its folder, and each run in it holds its own
sub-folder (``point-*/``, ``<method>/``), so the same lock is never needed twice; a folder that
this very process holds already is entered again without a second lock (re-entrant). DDP: the
further ranks of a run (the re-runs of the command Lightning starts with ``LOCAL_RANK`` > 0,
torchrun's and srun's ranks > 0) write under the lock of their rank 0, which took it.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shlex
import socket
import sys
import time
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import TypeGuard

from rim_bench.core.errors import ConfigError
from rim_bench.core.io import atomic_write_json

LOCK_FILE = ".rim-bench.lock"
MARKER = ".rim-bench-output.json"
OWN = (LOCK_FILE, f"{LOCK_FILE}.takeover", MARKER)  # rim-bench's bookkeeping in an output folder
MAX_COMMAND = 160  # characters of the holder's command shown in an error
MAX_PID = 2**22  # Linux's largest pid_max (PID_MAX_LIMIT); other systems stay below it


def refuse_inputs_inside(folder: str | os.PathLike, inputs: Iterable[str | os.PathLike], option: str) -> None:
    """Raise `ConfigError` if output `folder` is, or holds, one of `inputs` (files or folders a
    command reads). Links are followed, both the input's own name and where it points: writing
    ``folder/x.png`` replaces a link there as surely as a file.

    Args:
        option: the option or key that named `folder` (``--out``, ``output_dir``), for the message.
    """
    out = Path(folder).expanduser().resolve()
    for item in inputs:
        path = Path(item).expanduser()
        places = [path.resolve(), *([path.parent.resolve() / path.name] if path.is_symlink() else [])]
        if any(place.is_relative_to(out) for place in places):
            raise ConfigError(f"{option} '{folder}' holds the input '{item}': writing there could replace "
                              f"inputs; choose an output folder that holds none of them")


def claim_output(folder: str | os.PathLike, command: str, option: str, record: dict | None = None,
                 tolerated: Iterable[str] = ()) -> dict:
    """Make the existing `folder` an output folder of `command` (see the module doc): refused
    unless it holds nothing (but rim-bench's lock, and names matching a `tolerated` pattern: a
    Lightning logger's files in its own run folder) or the marker of an earlier `command` run. A
    further DDP rank claims nothing: its rank 0 did.

    Args:
        option: the option or key that named `folder`, for the message.
        record: what the marker records besides the command (``segment``: its vocabulary).
    Returns:
        The marker's record: the earlier run's, or the one written now.
    Raises:
        ConfigError: the folder holds other files, or another command's results.
    """
    folder = Path(folder)
    mine = {"command": command, **(record or {})}
    if _further_rank():
        return mine
    marker = folder / MARKER
    try:
        found = json.loads(marker.read_text())
    except FileNotFoundError:
        found = None
    except (OSError, ValueError) as e:
        raise ConfigError(f"{option} '{folder}': its marker {marker} cannot be read ({e}); delete it if the folder "
                          "holds no one's files, or choose another folder") from None
    if found is not None:
        if not isinstance(found, dict) or found.get("command") != command:
            other = found.get("command") if isinstance(found, dict) else found
            raise ConfigError(f"{option} '{folder}' holds the output of `rim-bench {other}`; choose another "
                              f"{option} for `rim-bench {command}`")
        return found
    patterns = list(tolerated)
    foreign = sorted(p.name for p in folder.iterdir()
                     if p.name not in OWN and not any(fnmatch.fnmatch(p.name, t) for t in patterns))
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise ConfigError(f"{option} '{folder}' holds files rim-bench did not write ({shown}): writing there could "
                          f"replace them; choose a new or empty folder")
    try:
        atomic_write_json(marker, mine)
    except OSError as e:
        raise ConfigError(f"{option}: cannot write '{marker}' ({e.strerror}); choose a writable folder") from None
    return mine


@contextmanager
def writing_into(folder: str | os.PathLike, command: str, option: str = "output_dir",
                 record: dict | None = None) -> Iterator[dict]:
    """Hold `folder` (`hold_output`) and claim it for `command` (`claim_output`, whose record it
    yields) for the block; when the block ends, take back what a failed run made (`remove_unused`)."""
    folder = Path(folder)
    created = not folder.is_dir()
    try:
        with hold_output(folder, option):
            yield claim_output(folder, command, option, record)
    finally:  # the lock released
        remove_unused(folder, created)


def remove_unused(folder: str | os.PathLike, created: bool) -> None:
    """After a run (its lock released): remove the folders under `folder` that hold nothing but
    rim-bench's marker (deepest first), and `folder` itself if the run `created` it; in a folder
    that was there before, the marker alone (it was empty). Files, and the folders holding them
    or a lock, stay."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    subfolders = sorted((p for p in folder.rglob("*") if p.is_dir() and not p.is_symlink()),
                        key=lambda p: len(p.parts), reverse=True)
    for sub in [*subfolders, folder]:
        with suppress(OSError):  # not ours to empty, or removed meanwhile
            if any(p.name not in OWN or p.name == LOCK_FILE for p in sub.iterdir()):  # a lock: a run is there
                continue
            for name in OWN:
                (sub / name).unlink(missing_ok=True)
            if sub != folder or created:
                sub.rmdir()


def new_folder(base: str | os.PathLike, option: str = "output_dir") -> Path:
    """A folder that did not exist, created: `base`, else ``<base>-2``, ``-3``, ... (two runs started
    in the same second get their own).

    Raises:
        ConfigError: it cannot be created.
    """
    for n in range(1, 10_000):
        folder = Path(f"{base}" if n == 1 else f"{base}-{n}")
        try:
            folder.mkdir(parents=True)
        except FileExistsError:
            continue
        except OSError as e:
            raise ConfigError(f"{option}: cannot create '{folder}' ({e.strerror}); choose a writable folder") from None
        return folder
    raise ConfigError(f"{option}: {base}-* all exist; set {option}=PATH")


@dataclass(frozen=True)
class Holder:
    """Who holds an output folder: enough to tell whether that process is still running."""

    host: str
    pid: int
    started: int | None  # the process's start (clock ticks after boot, Linux); None where unknown
    command: str = ""
    since: str = ""

    def same_process(self, other: Holder) -> bool:
        return (self.host, self.pid, self.started) == (other.host, other.pid, other.started)

    def describe(self) -> str:
        command = self.command if len(self.command) <= MAX_COMMAND else self.command[:MAX_COMMAND] + "..."
        return f"pid {self.pid} on {self.host} since {self.since} ({command})"


@contextmanager
def hold_output(folder: str | os.PathLike, option: str = "output_dir") -> Iterator[None]:
    """Hold `folder` (created if missing) as this run's output folder until the block ends.

    Raises:
        ConfigError: another running process holds it (the message names it), or the lock
            file cannot be written.
    """
    folder = Path(folder)
    if _further_rank():  # its rank 0 holds the folder for the whole run
        yield
        return
    lock = folder / LOCK_FILE
    me = _this_process()
    if not _take(lock, me, option):  # this process holds it already (a nested run)
        yield
        return
    try:
        yield
    finally:
        _release(lock, me)


def _take(lock: Path, me: Holder, option: str) -> bool:
    """Create `lock` for `me`, taking it over from a process that is gone; False if `me` holds it."""
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{option}: cannot create '{lock.parent}' ({e.strerror}); choose a writable folder") from None
    for _ in range(3):  # once a stale lock is removed, another run may take the place first
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read(lock)
            if holder is not None and holder.same_process(me):
                return False
            if holder is None or not _gone(holder):
                raise ConfigError(_held_message(lock, holder, option)) from None
            _remove_stale(lock, holder)
            continue
        except OSError as e:
            raise ConfigError(f"{option}: cannot write '{lock}' ({e.strerror}); choose a writable folder") from None
        try:
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(asdict(me)))
        except OSError as e:  # a full disk, say: leave no empty lock behind
            lock.unlink(missing_ok=True)
            raise ConfigError(f"{option}: cannot write '{lock}' ({e.strerror}); free space or choose another "
                              "folder") from None
        return True
    raise ConfigError(_held_message(lock, _read(lock), option))


def _held_message(lock: Path, holder: Holder | None, option: str) -> str:
    folder = lock.parent
    if holder is None:
        return (f"{option} '{folder}': its lock file {lock} {_unreadable(lock)}; if no rim-bench run writes there, "
                "delete it")
    elsewhere = f" (if that process is gone, delete {lock})" if holder.host != socket.gethostname() else ""
    return (f"{option} '{folder}' is being written by another run: {holder.describe()}; wait for it to end or "
            f"choose another {option}{elsewhere}")


def _release(lock: Path, me: Holder) -> None:
    holder = _read(lock, wait_s=0)
    if holder is not None and holder.same_process(me):
        lock.unlink(missing_ok=True)


def _remove_stale(lock: Path, holder: Holder) -> None:
    """Remove the lock of `holder` (gone), unless another run has replaced it meanwhile."""
    with _takeover_guard(lock):
        if _read(lock, wait_s=0) != holder:  # removed and taken by another run first
            return
        lock.unlink()
    warnings.warn(f"{lock.parent}: taking over the lock of a run that is gone ({holder.describe()})", stacklevel=4)


@contextmanager
def _takeover_guard(lock: Path) -> Iterator[None]:
    """One takeover of `lock` at a time: between reading a stale lock and removing it, no other run
    may remove it and create its own (which would then be removed). An advisory lock on a file
    beside it, which the kernel releases if its process dies; that file stays (only after a crash)."""
    import fcntl  # POSIX

    with open(lock.with_name(f"{lock.name}.takeover"), "a") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        yield


def _read(lock: Path, wait_s: float = 1.0) -> Holder | None:
    """The holder named in `lock`; None if it cannot be read or a field is not what this module
    writes (`_holder`), after `wait_s` for a holder that has created the file but not yet written it."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return _holder(lock.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)


def _unreadable(lock: Path) -> str:
    """Why `lock` cannot be read, for a message ("cannot be read (...)")."""
    try:
        _holder(lock.read_text())
    except FileNotFoundError:
        return "was removed meanwhile"
    except (OSError, ValueError) as e:
        reason = e.strerror if isinstance(e, OSError) else str(e)
        return f"cannot be read ({reason}: a run starting there, or a damaged file)"
    return "was replaced meanwhile"


def _holder(text: str) -> Holder:
    """The holder a lock file's `text` names, every field checked: a lock is never taken over, nor
    a pid signalled, on the word of a field this module did not write.

    Raises:
        ValueError: naming the field and its value.
    """
    fields = json.loads(text)
    if not isinstance(fields, dict):
        raise ValueError("not a JSON object")
    unknown = set(fields) - {"host", "pid", "started", "command", "since"}
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(sorted(unknown))}")
    host, pid, started = fields.get("host"), fields.get("pid"), fields.get("started")
    if not isinstance(host, str) or not host:
        raise ValueError(f"host {host!r} is not a host name")
    if not _whole(pid) or not 0 < pid <= MAX_PID:
        raise ValueError(f"pid {pid!r} is not a process id")
    if started is not None and (not _whole(started) or started < 0):
        raise ValueError(f"started {started!r} is not a process start time")
    for name in ("command", "since"):
        if not isinstance(fields.get(name, ""), str):
            raise ValueError(f"{name} {fields[name]!r} is not text")
    return Holder(host, pid, started, fields.get("command", ""), fields.get("since", ""))


def _whole(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _gone(holder: Holder) -> bool:
    """Whether `holder`'s process has provably ended: on this host, its pid is free, a zombie, or
    another process's (started at another time). A holder on another host may be running."""
    if holder.host != socket.gethostname():
        return False
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        pass
    state = _process_state(holder.pid)
    if state is None:  # no /proc: the pid is alive, and whether it is the holder's cannot be told
        return False
    status, started = state
    return status == "Z" or (holder.started is not None and started != holder.started)


def pid_running(pid: object) -> bool:
    """Whether `pid` is a running process of this host: not a free pid, not a zombie (killed, not
    yet reaped by its parent). True for what is not a pid: nothing is known of it."""
    if not _whole(pid) or not 0 < pid <= MAX_PID:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    state = _process_state(pid)
    return state is None or state[0] != "Z"


def _process_state(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks after boot) from ``/proc/<pid>/stat``; None without it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after the command name, which may hold spaces
    return fields[0], int(fields[19])


def _this_process() -> Holder:
    state = _process_state(os.getpid())
    return Holder(host=socket.gethostname(), pid=os.getpid(), started=state[1] if state else None,
                  command=shlex.join(sys.argv), since=datetime.now().isoformat(sep=" ", timespec="seconds"))


def _further_rank() -> bool:
    """Whether this process is a DDP rank other than its run's rank 0 (see the module doc)."""
    return launched_rank()[0] > 0 or any(int(os.environ.get(v) or 0) > 0 for v in ("LOCAL_RANK", "NODE_RANK"))


def launched_rank() -> tuple[int, int]:
    """This process's global rank and the world size when a launcher started every process
    (torchrun's RANK / WORLD_SIZE, SLURM's SLURM_PROCID / SLURM_NTASKS); (0, 1) otherwise."""
    for rank_var, size_var in (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS")):
        if rank_var in os.environ and size_var in os.environ:
            return int(os.environ[rank_var]), int(os.environ[size_var])
    return 0, 1

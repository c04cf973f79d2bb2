"""Building, saving, loading and caching reference banks (safetensors + JSON).

A bank is cached under ``<cache_dir>/banks/<key>/`` where the key hashes everything that
changes its content: the featurizer, the pooling, the reference source's config and
files, and the vocabulary. It is built in ``<key>.partial/`` (contact sheets, reports) and
renamed to ``<key>/`` when complete, so a reader never sees a partial bank. What outlives
one bank lives beside it, in shards of one (class, subcategory) each (`shard_path`):
generated references, reused by banks over other subcategory counts, in
``<cache_dir>/references/<key>/``, and the generated images and attention maps they come
from in ``<cache_dir>/generated/<key>/``. `rim_bench.core.cache_layout` names the folders and
their keys; this module reads and writes the stores.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from rim_bench.core.cache_files import (
    DamagedCacheError,
    all_finite,
    check_file,
    file_checksum,
    load_tensors,
    save_tensors,
    tensors_metadata,
)
from rim_bench.core.cache_layout import CacheLayout
from rim_bench.core.errors import DataError
from rim_bench.core.io import atomic_write_json, atomic_write_text, safe_name, set_aside
from rim_bench.core.output_lock import pid_running
from rim_bench.core.types import ReferenceBank

log = logging.getLogger(__name__)

TENSORS = "bank.safetensors"
METADATA = "bank.json"
KEY = "key.json"
BANK_WAIT_TIMEOUT_S = 24 * 3600  # a day: far longer than building any benchmark's bank should take
HEARTBEAT_S = 5.0  # rank 0 touches its heartbeat file this often while it builds
# Waiting ranks give up on a rank 0 whose heartbeat is older than this: one killed on another node
# is noticed within 40 s + a poll (2 s) of its last beat, inside the minute docs/scaling.md promises.
HEARTBEAT_STALE_S = 40.0


def write_bank(bank: ReferenceBank, directory: Path, extra: dict | None = None, *, made_for: str) -> None:
    """Write `bank` (and JSON-able `extra` metadata) into `directory`, each file atomically;
    the tensors carry their checksum, the JSON's and the key the bank was `made_for`
    (`bank_made_for`; `rim_bench.core.cache_files`)."""
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_json(directory / METADATA, {
        "class_names": bank.class_names, "subcategory_names": bank.subcategory_names, "meta": bank.meta,
        **(extra or {}),
    })
    save_tensors(directory / TENSORS, {"features": bank.features, "class_ids": bank.class_ids,
                                       "subcategory_ids": bank.subcategory_ids},
                 {METADATA: file_checksum(directory / METADATA)}, made_for=made_for)


def bank_made_for(key_spec: dict) -> str:
    """What a cached bank is for: its spec (`CacheLayout.bank_key`), as its folder's name hashes it."""
    return json.dumps(key_spec, sort_keys=True, separators=(",", ":"), default=str)


def load_bank(directory: Path, made_for: str | None = None) -> ReferenceBank:
    """Read a bank written by `write_bank`, its checksums and finite features checked, and, given
    the key it is looked up for (`made_for`), that it was made for that key.

    Raises:
        DamagedCacheError: a file cannot be read, does not match its checksum, or the bank is malformed.
    """
    try:
        tensors, metadata = load_tensors(directory / TENSORS, made_for=made_for)
        check_file(directory / METADATA, metadata.get(METADATA))
        info = json.loads((directory / METADATA).read_text())
        return ReferenceBank(
            features=tensors["features"], class_ids=tensors["class_ids"], subcategory_ids=tensors["subcategory_ids"],
            class_names=info["class_names"], subcategory_names=info["subcategory_names"], meta=info["meta"],
        )
    except Exception as e:  # checksum, JSON and shape errors alike
        reason = str(e) if isinstance(e, DamagedCacheError) else f"{type(e).__name__}: {e}"
        raise DamagedCacheError(f"the cached bank in '{directory}' cannot be read ({reason})") from None


def cached_bank(cache: CacheLayout | Path, key_spec: dict, build: Callable[[Path], ReferenceBank],
                rank: int = 0, barrier: Callable[[], None] = lambda: None,
                wait: bool = False, poll_seconds: float = 2.0, timeout_s: float = BANK_WAIT_TIMEOUT_S,
                stale_s: float = HEARTBEAT_STALE_S) -> tuple[ReferenceBank, Path, bool]:
    """Load the bank for `key_spec` from the cache, or build it in its work folder and publish it.

    Args:
        cache: the config's `CacheLayout`, or a ``cache_dir`` (a bare layout there).
        build: makes the bank, given its work folder (every rank calls it in a sharded build).
        rank, barrier: the first rank publishes the bank; the others wait for it.
        wait: build nothing; wait until another process (rank 0 of a job whose ranks start
            together, e.g. under srun) has published the bank, checking every `poll_seconds`;
            an error if rank 0 reports a failure, if it is gone (its process, on this host, or
            its heartbeat, silent for `stale_s`), or after `timeout_s`.
    Returns:
        The bank, its cache folder, and whether it was a cache hit.
    """
    layout = cache if isinstance(cache, CacheLayout) else CacheLayout(Path(cache).expanduser())
    directory = layout.bank_dir(key_spec)
    made_for = bank_made_for(key_spec)
    # Rank 0's error, for the ranks of the same job waiting on it (other jobs may share the cache).
    failed = directory.with_name(f"{directory.name}.failed-{safe_name(job_id())}")
    alive = directory.with_name(f"{directory.name}.alive-{safe_name(job_id())}")  # rank 0's heartbeat
    if wait and not (directory / METADATA).is_file():
        _wait_for(directory, failed, rank, poll_seconds, timeout_s, alive, stale_s)
    if (directory / METADATA).is_file():
        try:
            bank = load_bank(directory, made_for)
            bank.directory = directory
            if wait:  # whether it waited or rank 0 had already published: this rank built nothing
                log.warning(f"rank {rank}: read the reference bank rank 0 built, {directory}")
            return bank, directory, True
        except DamagedCacheError as e:
            set_aside(directory, e)
    work = directory.with_name(directory.name + ".partial")
    stop_heartbeat = _start_heartbeat(alive) if rank == 0 else lambda: None
    try:
        work.mkdir(parents=True, exist_ok=True)
        bank = build(work)
        if len(bank) == 0:
            raise DataError(f"the reference bank is empty (see {work}): no reference survived; lower "
                            "references.diffusion.attn_threshold or check the reference images")
        if not all_finite(bank.features):  # never published: a cached bank is finite
            raise DataError(f"the reference bank built in {work} has non-finite features (NaN or inf): check the "
                            "featurizer's weights (featurizer.dinov2.model) and the reference images")
        if rank == 0:
            write_bank(bank, work, made_for=made_for)
            atomic_write_json(work / KEY, key_spec)
            _publish(work, directory)
            failed.unlink(missing_ok=True)  # this job's earlier attempt's failure
    except Exception as e:
        if rank == 0:
            atomic_write_text(failed, f"{type(e).__name__}: {e}".splitlines()[0] + "\n")
        raise
    finally:
        stop_heartbeat()
    barrier()
    bank.directory = directory
    return bank, directory, False


def job_id() -> str:
    """What the processes of one launch share and other launches do not: SLURM's job, step and
    restart count, or torchrun's run id, or the rendezvous address; "local" otherwise."""
    env = os.environ
    if "SLURM_JOB_ID" in env:
        return "slurm-" + "-".join(env.get(k, "0") for k in ("SLURM_JOB_ID", "SLURM_STEP_ID", "SLURM_RESTART_COUNT"))
    if "TORCHELASTIC_RUN_ID" in env:
        return "torchrun-" + env["TORCHELASTIC_RUN_ID"]
    if "MASTER_ADDR" in env:
        return f"{env['MASTER_ADDR']}-{env.get('MASTER_PORT', '')}"
    return "local"


def _wait_for(directory: Path, failed: Path, rank: int, poll_seconds: float, timeout_s: float,
              alive: Path, stale_s: float) -> None:
    """Wait until `directory` holds a published bank; fail at once if this job's rank 0
    reports an error (its `failed` marker), within `stale_s` if it is gone (`_Rank0Heartbeat`),
    or after `timeout_s`."""
    log.warning(f"rank {rank}: waiting for rank 0 to build the reference bank {directory}")
    start = reminded = time.monotonic()
    heartbeat = _Rank0Heartbeat(alive, stale_s)
    while not (directory / METADATA).is_file():
        gone = heartbeat.gone()  # before reading `failed`: rank 0 writes that before removing its heartbeat
        try:
            error = failed.read_text().strip()
        except OSError:
            error = None
        if error is not None:
            raise DataError(f"rank 0 failed to build the reference bank {directory}: {error}")
        if gone is not None and not (directory / METADATA).is_file():  # not published meanwhile
            raise DataError(f"rank {rank}: rank 0 {gone} before it published the reference bank {directory}; "
                            "run the job again (the bank's finished parts are kept)")
        if time.monotonic() - start > timeout_s:
            raise DataError(f"rank {rank}: no reference bank in {directory} after {timeout_s / 3600:.1f} h; does "
                            "every node see the same cache_dir? Build it first with `rim-bench build-bank`")
        if time.monotonic() - reminded > 600:
            reminded = time.monotonic()
            log.warning(f"rank {rank}: still waiting for {directory} (cache_dir must be shared by every node)")
        time.sleep(poll_seconds)


def _start_heartbeat(alive: Path) -> Callable[[], None]:
    """Write rank 0's host and pid to `alive` and touch it every `HEARTBEAT_S` until the
    returned function is called, which removes it."""
    atomic_write_json(alive, {"host": socket.gethostname(), "pid": os.getpid()})
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            try:
                os.utime(alive)
            except OSError:  # removed, or the cache is gone: waiting ranks will say so
                pass

    thread = threading.Thread(target=beat, name="bank-heartbeat", daemon=True)
    thread.start()

    def stop_beating() -> None:
        stop.set()
        thread.join()
        alive.unlink(missing_ok=True)

    return stop_beating


class _Rank0Heartbeat:
    """What a waiting rank reads of rank 0's heartbeat file (`_start_heartbeat`)."""

    def __init__(self, alive: Path, stale_s: float) -> None:
        self.alive = alive
        self.stale_s = stale_s
        # When rank 0 last showed life: at first the wait's start, as rank 0 may not have begun
        # and an older file may be another job's (a shared cache).
        self.last = time.time()
        self.seen = False  # once seen, its removal means that rank 0 has stopped

    def gone(self) -> str | None:
        """How rank 0 is known to be gone, or None: its heartbeat names a process of this host
        that has ended, or was removed, or has not been touched for `stale_s`."""
        try:
            beat = json.loads(self.alive.read_text())
            touched = self.alive.stat().st_mtime
        except (OSError, ValueError):  # not written yet, or removed
            if self.seen:
                return "has stopped (its heartbeat is gone)"
            beat, touched = None, 0.0
        else:
            self.seen = True
        now = time.time()
        if (now - touched < self.stale_s and isinstance(beat, dict) and beat.get("host") == socket.gethostname()
                and not pid_running(beat.get("pid"))):
            return f"(pid {beat['pid']}) has ended"
        self.last = max(self.last, touched)
        if now - self.last > self.stale_s:
            return f"has given no sign of life for {now - self.last:.0f} s (heartbeat {self.alive})"
        return None


def _publish(work: Path, directory: Path) -> None:
    """Rename the finished work folder into place; if another process got there first, keep theirs."""
    try:
        os.replace(work, directory)
    except OSError:
        if not (directory / METADATA).is_file():
            raise
        shutil.rmtree(work, ignore_errors=True)


def concat_banks(banks: list[ReferenceBank]) -> ReferenceBank:
    """One bank holding the references of several banks over the same vocabulary."""
    names = banks[0].class_names
    if any(b.class_names != names for b in banks):
        raise ValueError("banks over different vocabularies cannot be joined")
    subcategories = sorted({s for b in banks for s in b.subcategory_names})
    index = {s: i for i, s in enumerate(subcategories)}
    remap = [torch.tensor([index[s] for s in b.subcategory_names], dtype=torch.long) for b in banks]
    return ReferenceBank(
        features=torch.cat([b.features for b in banks]),
        class_ids=torch.cat([b.class_ids for b in banks]),
        subcategory_ids=torch.cat([r[b.subcategory_ids] if len(b) else b.subcategory_ids
                                   for b, r in zip(banks, remap)]),
        class_names=list(names),
        subcategory_names=subcategories,
        meta=[m for b in banks for m in b.meta],
    )


def bank_summary(bank: ReferenceBank) -> str:
    """One line: references per class."""
    counts = torch.bincount(bank.class_ids, minlength=bank.num_classes).tolist()
    return ", ".join(f"{name} {n}" for name, n in zip(bank.class_names, counts))


def save_shard(path: Path, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
    """One finished piece of a resumable build: tensors plus JSON metadata in one file,
    atomically, with their checksum and what it is for (`shard_made_for`)."""
    save_tensors(path, tensors, {"json": json.dumps(info)}, made_for=shard_made_for(path))


def shard_made_for(path: Path) -> str:
    """What a shard is for: its place in its store, which `shard_path` makes of keys alone (the
    store's settings, the class, a hash of its names and subcategory)."""
    return "shard " + "/".join(Path(path).parts[-3:])


def load_shard(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A shard's tensors and metadata, checked (`DamagedCacheError` naming it if damaged or made
    for another place)."""
    tensors, metadata = load_tensors(path, made_for=shard_made_for(path))
    return tensors, json.loads(metadata["json"])


def shard_info(path: Path) -> dict[str, Any]:
    """A shard's metadata alone, without reading (or checking) its tensors: for estimates."""
    try:
        return json.loads(tensors_metadata(path)["json"])
    except (KeyError, ValueError) as e:
        raise DamagedCacheError(f"cached shard '{path}' has no readable metadata ({type(e).__name__}: {e})") from None


def shard_or_none(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """A stored shard, or None if there is none or it is damaged (then it is set aside, with a warning)."""
    if not path.is_file():
        return None
    try:
        return load_shard(path)
    except DamagedCacheError as e:
        set_aside(path, e)
        return None


def shard_path(store: Path, names: list[str], subcategory: str) -> Path:
    """A (class, subcategory) shard in a store of generated references or images; the class's
    synonyms are in the name since they pick its word."""
    digest = hashlib.sha256(json.dumps([names, subcategory]).encode()).hexdigest()[:16]
    return store / safe_name(names[0]) / f"{digest}.safetensors"

"""Push a bundle to a device: only changed files, verified on the device, never half-written.

Layout under the device's configured root ``R`` (``remote_dir``, resolved once with
``realpath``; every other path is ``R/<plain name>``, so nothing can leave it)::

    R/<bundle>/             the live bundle: complete, every file verified
    R/.<bundle>.incoming/   an update being staged (kept between runs: re-running resumes)
        .<file>.part        a file being uploaded (appended to on resume)
    R/.<bundle>.old/        the previous live bundle, for the instant of the swap

Steps (``push_bundle``):

1. From one device listing (name, kind, size, sha256 of every entry, symlinks not followed):
   repair what a killed run left (``.old`` without live → put back), and stop early when the
   live bundle already equals this one.
2. Fill ``incoming``: files already staged with the right sha256 stay; files the live bundle
   has unchanged are hard-linked; the rest are uploaded to ``.<file>.part`` — appending to a
   partial part whose bytes are a prefix of the local file (resume), else from zero.
3. List ``incoming`` again and compare every sha256 with the bundle's; rename the parts to their
   names (``bundle.json`` last), remove anything else.
4. Swap: live → ``.old``, ``incoming`` → live, remove ``.old``.

A connection lost anywhere leaves the live bundle as it was (or absent on a first push) and
``incoming`` with what had arrived; the next run continues from there. The device side is
reached only through a ``Transport`` and a ``lister`` callback (``session.py`` implements it
with ``edgeopt-runtime device --list``).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeopt_runtime.bundle import BUNDLE_INDEX, check_name
from edgeopt_runtime.errors import EdgeOptError

from .bundle import LocalBundle
from .transport import Transport

Lister = Callable[[list[str]], Awaitable[dict[str, dict[str, Any]]]]
Events = Callable[[str, dict[str, Any]], None]


class PushError(EdgeOptError):
    """The device holds something in the way, or a file arrived damaged."""


@dataclass(frozen=True)
class RemoteLayout:
    """The remote paths of one bundle under one resolved root."""

    root: str
    name: str

    def __post_init__(self) -> None:
        check_name(self.name, "bundle name")
        if not self.root.startswith("/"):
            raise PushError(f"remote root {self.root!r} must be an absolute (resolved) path")

    @property
    def live(self) -> str:
        return f"{self.root.rstrip('/')}/{self.name}"

    @property
    def incoming(self) -> str:
        return f"{self.root.rstrip('/')}/.{self.name}.incoming"

    @property
    def old(self) -> str:
        return f"{self.root.rstrip('/')}/.{self.name}.old"

    def staged(self, file: str) -> str:
        return f"{self.incoming}/{file}"

    def part(self, file: str) -> str:
        return f"{self.incoming}/{part_name(file)}"


def part_name(file: str) -> str:
    return f".{file}.part"


@dataclass
class PushResult:
    """What a push did, for the report."""

    remote_dir: str
    up_to_date: bool = False
    uploaded: list[str] = field(default_factory=list)
    resumed: dict[str, int] = field(default_factory=dict)  # file -> bytes already there
    linked: list[str] = field(default_factory=list)  # unchanged, hard-linked from the live copy
    kept: list[str] = field(default_factory=list)  # staged by an earlier, interrupted run
    damaged_on_device: list[str] = field(default_factory=list)  # live copy changed since pushed
    removed: list[str] = field(default_factory=list)
    restored_previous: bool = False
    bytes_sent: int = 0
    verified_files: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "remote_dir": self.remote_dir,
            "up_to_date": self.up_to_date,
            "uploaded": self.uploaded,
            "resumed": self.resumed,
            "linked": self.linked,
            "kept": self.kept,
            "damaged_on_device": self.damaged_on_device,
            "removed": self.removed,
            "restored_previous": self.restored_previous,
            "bytes_sent": self.bytes_sent,
            "verified_files": self.verified_files,
            "seconds": round(self.seconds, 3),
        }


def sha256_prefix(path: Path, size: int) -> str:
    """sha256 of the first ``size`` bytes of a local file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        left = size
        while left > 0 and (block := f.read(min(1 << 20, left))):
            h.update(block)
            left -= len(block)
    return h.hexdigest()


def _entries(listing: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return listing.get("entries", {}) if listing.get("kind") == "directory" else {}


def _same(entry: dict[str, Any] | None, sha: str) -> bool:
    return bool(entry) and entry.get("kind") == "file" and entry.get("sha256") == sha


async def push_bundle(
    t: Transport,
    bundle: LocalBundle,
    layout: RemoteLayout,
    listings: dict[str, dict[str, Any]],
    lister: Lister,
    events: Events | None = None,
) -> PushResult:
    """Bring ``layout.live`` to exactly ``bundle``'s files (see the module docstring).

    Args:
        t: an open transport.
        bundle: the local bundle.
        layout: remote paths (root already resolved).
        listings: ``{path: list_dir(path)}`` for live, incoming and old, as just listed.
        lister: lists paths on the device again (for the verification after upload).
        events: ``events(kind, info)`` for progress (``upload``, ``uploaded``, ``verified``, ...).

    Raises:
        PushError: something that is not ours is in the way, or an upload arrived damaged.
        TransportError: from the transport (connection lost, timeouts).
    """
    t0 = time.perf_counter()
    emit = events or (lambda kind, info: None)
    res = PushResult(remote_dir=layout.live)
    live, incoming, old = (listings[p] for p in (layout.live, layout.incoming, layout.old))
    live, incoming, old = await _clear_the_way(t, layout, live, incoming, old, res)
    expected = bundle.expected()
    live_files = _entries(live)
    if live["kind"] == "directory" and _matches(live_files, expected):
        res.up_to_date = True
        res.verified_files = len(expected)
        for path, listing in ((layout.incoming, incoming), (layout.old, old)):
            if listing["kind"] != "missing":
                await t.remove_tree(path)
        res.seconds = time.perf_counter() - t0
        return res
    if _same(live_files.get(BUNDLE_INDEX), expected[BUNDLE_INDEX][0]):
        # same bundle as last time, yet files differ: changed or damaged on the device since
        res.damaged_on_device = sorted(
            n for n, (sha, _) in expected.items() if not _same(live_files.get(n), sha)
        )
    if incoming["kind"] == "missing":
        await t.makedirs(layout.incoming)
    staged = _entries(incoming)
    uploads = await _stage(t, bundle, layout, expected, live_files, staged, res, emit)
    await _remove_strays(t, layout, expected, staged, res)
    await _verify(layout, expected, uploads, await lister([layout.incoming]), t, res, emit)
    for name in sorted(uploads, key=lambda n: n == BUNDLE_INDEX):  # the index last
        await t.rename(layout.part(name), layout.staged(name))
    if live["kind"] == "directory":
        await t.rename(layout.live, layout.old)
    await t.rename(layout.incoming, layout.live)
    emit("swapped", {"path": layout.live})
    await t.remove_tree(layout.old)
    res.seconds = time.perf_counter() - t0
    return res


async def _clear_the_way(
    t: Transport,
    layout: RemoteLayout,
    live: dict[str, Any],
    incoming: dict[str, Any],
    old: dict[str, Any],
    res: PushResult,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Refuse foreign objects at the live path; repair what an interrupted swap left."""
    if live["kind"] not in ("missing", "directory"):
        raise PushError(
            f"{layout.live} on the device is a {live['kind']}, not a bundle folder edgeopt "
            "made; remove it there or choose another --remote-dir"
        )
    missing = {"kind": "missing"}
    if incoming["kind"] not in ("missing", "directory"):
        await t.remove(layout.incoming)  # a symlink or file under our private name
        incoming = missing
    if old["kind"] not in ("missing", "directory"):
        await t.remove(layout.old)
        old = missing
    if live["kind"] == "missing" and old["kind"] == "directory":
        await t.rename(layout.old, layout.live)  # a swap was cut between its two renames
        res.restored_previous = True
        live, old = old, missing
    elif old["kind"] == "directory":
        await t.remove_tree(layout.old)  # a finished swap whose clean-up was cut
        old = missing
    return live, incoming, old


def _matches(files: dict[str, dict[str, Any]], expected: dict[str, tuple[str, int]]) -> bool:
    return set(files) == set(expected) and all(_same(files[n], s) for n, (s, _) in expected.items())


async def _stage(
    t: Transport,
    bundle: LocalBundle,
    layout: RemoteLayout,
    expected: dict[str, tuple[str, int]],
    live_files: dict[str, dict[str, Any]],
    staged: dict[str, dict[str, Any]],
    res: PushResult,
    emit: Events,
) -> list[str]:
    """Put every file into ``incoming`` (kept, linked or uploaded); returns the uploaded names."""
    uploads = []
    for name in sorted(expected, key=lambda n: (n == BUNDLE_INDEX, n)):
        sha, size = expected[name]
        have = staged.get(name)
        if _same(have, sha):
            res.kept.append(name)
            continue
        if have is not None:
            await t.remove_tree(layout.staged(name))
        if _same(live_files.get(name), sha) and await t.link(
            f"{layout.live}/{name}", layout.staged(name)
        ):
            res.linked.append(name)
            continue
        await _upload(
            t,
            bundle.directory / name,
            layout.part(name),
            size,
            staged.get(part_name(name)),
            name,
            res,
            emit,
        )
        uploads.append(name)
    return uploads


async def _upload(
    t: Transport,
    local: Path,
    remote: str,
    size: int,
    part: dict[str, Any] | None,
    name: str,
    res: PushResult,
    emit: Events,
) -> None:
    offset = 0
    if part is not None:
        ok = (
            part.get("kind") == "file"
            and 0 < part.get("size_bytes", 0) <= size
            and sha256_prefix(local, part["size_bytes"]) == part.get("sha256")
        )
        if ok:
            offset = part["size_bytes"]
            res.resumed[name] = offset
        else:
            await t.remove_tree(remote)
    emit("upload", {"file": name, "offset": offset, "size": size, "sent": offset})
    if offset < size or size == 0:
        sent = await t.write_file(
            local,
            remote,
            offset=offset,
            progress=lambda done: emit(
                "upload", {"file": name, "offset": offset, "size": size, "sent": done}
            ),
        )
        res.bytes_sent += sent
    res.uploaded.append(name)
    emit("uploaded", {"file": name, "size": size})


async def _remove_strays(
    t: Transport,
    layout: RemoteLayout,
    expected: dict[str, tuple[str, int]],
    staged: dict[str, dict[str, Any]],
    res: PushResult,
) -> None:
    wanted = set(expected) | {part_name(n) for n in expected}
    for name in sorted(set(staged) - wanted):
        await t.remove_tree(layout.staged(name))
        res.removed.append(name)


async def _verify(
    layout: RemoteLayout,
    expected: dict[str, tuple[str, int]],
    uploads: list[str],
    listings: dict[str, dict[str, Any]],
    t: Transport,
    res: PushResult,
    emit: Events,
) -> None:
    """Every file in ``incoming`` must have the bundle's sha256 as the device computes it."""
    entries = _entries(listings[layout.incoming])
    for name, (sha, _) in expected.items():
        key = part_name(name) if name in uploads else name
        entry = entries.get(key)
        if not _same(entry, sha):
            got = (entry or {}).get("sha256") or (entry or {}).get("kind", "missing")
            await t.remove_tree(layout.staged(key))
            raise PushError(
                f"{layout.staged(key)}: arrived with sha256 {str(got)[:16]}…, expected "
                f"{sha[:16]}… (removed; run again to upload it anew)"
            )
    res.verified_files = len(expected)
    emit("verified", {"files": len(expected)})


__all__ = ["PushError", "PushResult", "RemoteLayout", "push_bundle", "sha256_prefix"]

"""Where bytes come from: local files and folders (recursive), zip archives, S3 prefixes."""

from __future__ import annotations

import shutil
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import fsspec

from dicomlake.store.lakehouse import fsspec_s3_kwargs, s3_options_from_env

ZIP_SEPARATOR = "!/"


@dataclass(frozen=True)
class SourceItem:
    """One candidate instance. `container` is the file the drop disposition acts on."""

    source: str  # stable identifier, recorded in the feed and quarantine: path, zip!/member, s3 URI
    container: str
    member: str | None = None

    @property
    def is_remote(self) -> bool:
        return "://" in self.container


def _is_hidden(path: Path) -> bool:
    # Dot-files are how uploaders mark files still being written (e.g. '.scan.dcm.part').
    return path.name.startswith(".")


def _zip_items(path: str, opener=None) -> Iterator[SourceItem]:
    with opener(path) if opener else open(path, "rb") as handle, zipfile.ZipFile(handle) as archive:
        for info in archive.infolist():
            if info.is_dir() or Path(info.filename).name.startswith("."):
                continue
            yield SourceItem(f"{path}{ZIP_SEPARATOR}{info.filename}", path, info.filename)


def expand_sources(
    paths: Sequence[str | Path], storage_options: Mapping[str, str] | None = None
) -> list[SourceItem]:
    """Every candidate item under `paths`, in a stable order (sorted within each folder)."""
    items: list[SourceItem] = []
    for raw in paths:
        text = str(raw)
        if text.startswith("s3://"):
            items.extend(_s3_items(text, storage_options))
            continue
        path = Path(text)
        if not path.exists():
            raise FileNotFoundError(f"no such file or folder: {text}")
        candidates = (
            sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and not any(_is_hidden(q) for q in p.relative_to(path).parents if q.name)
                and not _is_hidden(p)
            )
            if path.is_dir()
            else [path]
        )
        for candidate in candidates:
            name = str(candidate)
            if candidate.suffix.lower() == ".zip" and zipfile.is_zipfile(candidate):
                items.extend(_zip_items(name))
            else:
                items.append(SourceItem(name, name))
    return items


def s3_filesystem(storage_options: Mapping[str, str] | None) -> fsspec.AbstractFileSystem:
    options = dict(storage_options) if storage_options else s3_options_from_env()
    return fsspec.filesystem("s3", **fsspec_s3_kwargs(options))


def _s3_items(uri: str, storage_options: Mapping[str, str] | None) -> Iterator[SourceItem]:
    fs = s3_filesystem(storage_options)
    base = uri.removeprefix("s3://").rstrip("/")
    for key in sorted(fs.find(uri)):
        name = f"s3://{key}"
        # As for local folders: skip dot-names anywhere below the given prefix ('.staging/x.dcm').
        if any(part.startswith(".") for part in key.removeprefix(base).split("/")):
            continue
        if key.lower().endswith(".zip"):
            try:  # read the whole listing first: a bad archive raises before any item is yielded
                yield from list(_zip_items(name, opener=lambda p: fs.open(p, "rb")))
                continue
            except zipfile.BadZipFile:
                pass  # not really a zip: an item of its own, quarantined like a local one
        yield SourceItem(name, name)


def read_item(item: SourceItem, storage_options: Mapping[str, str] | None = None) -> bytes:
    if item.is_remote:
        fs = s3_filesystem(storage_options)
        if item.member is None:
            return fs.cat_file(item.container)
        with fs.open(item.container, "rb") as handle, zipfile.ZipFile(handle) as archive:
            return archive.read(item.member)
    if item.member is None:
        with open(item.container, "rb") as handle:
            return handle.read()
    with zipfile.ZipFile(item.container) as archive:
        return archive.read(item.member)


def dispose(
    container: str,
    disposition: str,
    move_to: str | None,
    base: str | None,
    storage_options: Mapping[str, str] | None = None,
) -> None:
    """Apply the drop disposition to a fully committed container: keep, delete or move it."""
    if disposition == "keep":
        return
    if "://" in container:
        fs = s3_filesystem(storage_options)
        if disposition == "move" and move_to:
            fs.copy(container, f"{move_to.rstrip('/')}/{_relative(container, base)}")
        fs.rm_file(container)
        return
    if disposition == "delete":
        Path(container).unlink(missing_ok=True)
    elif disposition == "move":
        if not move_to:
            raise ValueError("disposition 'move' needs a destination folder")
        target = _free_name(Path(move_to) / _relative(container, base))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(container, target)  # a rename, or copy + delete across file systems
    else:
        raise ValueError(f"unknown disposition {disposition!r} (keep | delete | move)")


def _free_name(target: Path) -> Path:
    """`target`, or `name.1`, `name.2`… if taken: a move never overwrites an earlier file."""
    candidate, number = target, 0
    while candidate.exists():
        number += 1
        candidate = target.with_name(f"{target.name}.{number}")
    return candidate


def _relative(container: str, base: str | None) -> str:
    if base and container.startswith(base.rstrip("/") + "/"):
        return container[len(base.rstrip("/")) + 1 :]
    return container.rsplit("/", 1)[-1]

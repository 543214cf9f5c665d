"""The index of an image folder: which files belong to which class, from the file listing alone.

Two layouts, as torchvision's ``ImageFolder`` and Omniglot lay them out: ``ROOT/<class>/<image>``, or
``ROOT/<group>/<class>/<image>`` (Omniglot's ``<alphabet>/<character>/``), where splits keep whole
groups apart. Indexing lists directories and stats files (for the digest); it never opens an image,
so a folder of 100,000 images is indexed in about a second (``experiments/bench_user_data.py``).

What counts: files whose suffix Pillow opens (``.png``, ``.jpg``, ...). Hidden files (``.DS_Store``)
and ``Thumbs.db`` / ``desktop.ini`` are left out silently; any other file is refused with its name, so
a stray ``notes.txt`` is not taken for an image. A file named like an image that is no regular file
(a FIFO, whose opening would wait forever, a socket, a device, a dangling symbolic link) or cannot
be read (permissions) is refused here, with what it is (:func:`metacompare.paths.problem`); one
whose bytes are not an image is found when it is loaded (or by ``inspect --verify``).
The digest hashes every file's path, size and modification time: a run records it, and a later run
on a changed folder is refused instead of mixing two datasets in one comparison.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from metacompare import paths
from metacompare.errors import DataError

IMAGE_SUFFIXES = frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)
IGNORED_NAMES = frozenset({"thumbs.db", "desktop.ini"})
LAYOUT_HELP = "lay it out as ROOT/<class>/<image> or ROOT/<group>/<class>/<image>"


@dataclass
class FolderIndex:
    """Files in class order: ``files[i]`` (relative to ``root``) is of class ``labels[i]``."""

    root: Path
    files: list[str]
    labels: list[int]
    classes: list[str]  # "group/class" or "class"
    groups: list[str]   # each class's group ("" in a one-level folder)
    digest: str
    ignored: int = 0  # hidden and system files left out
    per_class: list[int] = field(default_factory=list)

    @property
    def two_level(self) -> bool:
        return any(self.groups)


def _hidden(name: str) -> bool:
    return name.startswith(".") or name.lower() in IGNORED_NAMES


def _listing(folder: Path) -> tuple[list[os.DirEntry], list[os.DirEntry], int]:
    """(subfolders, files, ignored count) of one folder, sorted by name."""
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except PermissionError:
        raise DataError(f"{folder}: cannot be listed (permission denied); make it readable "
                        f"(chmod u+rx) or move it out of the data folder") from None
    dirs, files, ignored = [], [], 0
    for entry in entries:
        if _hidden(entry.name):
            ignored += 1
        elif entry.is_symlink() and not os.path.exists(entry.path):
            raise DataError(f"{entry.path}: {paths.dangling(entry.path)}; restore its target or remove the link")
        elif entry.is_dir():
            dirs.append(entry)
        else:
            files.append(entry)
    return dirs, files, ignored


def _images(folder: Path, files: list[os.DirEntry], root: Path, digest) -> list[str]:
    """The relative paths of a class folder's images, each checked readable and hashed into ``digest``."""
    found = []
    for entry in files:
        path = Path(entry.path)
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise DataError(f"{path}: not an image file (suffix '{path.suffix}'; Pillow opens "
                            f".png, .jpg, .bmp, .gif, .tif, .webp, ...); move it out of {root}")
        try:
            stat = entry.stat()  # follows symbolic links, as opening does
        except OSError:
            stat = None  # a dangling link or a loop: paths.problem says which
        paths.require_file(path, f"make it a readable image file or move it out of {root}", stat)
        relative = os.path.relpath(path, root)
        digest.update(os.fsencode(relative) + b"\0" + f"{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        found.append(relative)
    return found


def index_folder(root: str | Path) -> FolderIndex:
    """List ``root`` into a :class:`FolderIndex`; a DataError names the file or folder that does not fit."""
    root = Path(root)
    paths.require_present(root, "no such folder", "give the folder that holds one subfolder per class")
    if not root.is_dir():
        raise DataError(f"{root}: is a file, not a folder; for a CSV or Parquet table use dataset: table "
                        f"or text (`metacompare inspect` detects the form)")
    tops, loose, ignored = _listing(root)
    if loose:
        raise DataError(f"{loose[0].path}: a file directly in {root}; images go in class subfolders: {LAYOUT_HELP}")
    if not tops:
        raise DataError(f"{root}: holds no class folders (it is empty); {LAYOUT_HELP}")
    digest = hashlib.sha256()
    files: list[str] = []
    labels: list[int] = []
    classes: list[str] = []
    groups: list[str] = []
    per_class: list[int] = []
    kinds = set()
    for top in tops:
        subdirs, images, hidden = _listing(Path(top.path))
        ignored += hidden
        if subdirs and images:
            raise DataError(f"{top.path}: holds both images and subfolders; {LAYOUT_HELP}")
        kinds.add("group" if subdirs else "class")
        if len(kinds) > 1:
            raise DataError(f"{root}: mixes class folders (with images) and group folders (with class "
                            f"subfolders), e.g. {top.path}; {LAYOUT_HELP}")
        members = [(top.name, Path(d.path)) for d in subdirs] if subdirs else [("", Path(top.path))]
        for group, folder in members:
            if group:
                nested, images, hidden = _listing(folder)
                ignored += hidden
                if nested:
                    raise DataError(f"{nested[0].path}: a third folder level; {LAYOUT_HELP}")
            names = _images(folder, images, root, digest)
            if not names:
                raise DataError(f"{folder}: holds no images; add some or remove the folder")
            label = len(classes)
            classes.append(f"{group}/{folder.name}" if group else folder.name)
            groups.append(group)
            per_class.append(len(names))
            files += names
            labels += [label] * len(names)
    return FolderIndex(root, files, labels, classes, groups, digest.hexdigest(), ignored, per_class)

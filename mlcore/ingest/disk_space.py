"""Free disk space checked before a scene is imported: a big scene is refused with the figures
instead of filling the disk half way through its conversion or its tiles."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

# Deep-zoom JPEG tiles (Q 90, every level) as a share of the scene's raw RGB bytes: 0.17 on the
# gigapixel bench's scene (grey noise and squares, docs/speed.md#gigapixel-scenes); busier pictures
# take more, so twice that is asked for.
PYRAMID_SHARE = 0.35
RESERVE_BYTES = 1024**3  # left free for everything else on the machine


class DiskSpaceError(OSError):
    """Not enough free disk space; the message gives what is needed and what is free."""


def _existing(path: Path) -> Path:
    path = Path(path).resolve()
    while not path.exists():
        path = path.parent
    return path


def _gb(n: float) -> str:
    return f"{n / 1e9:,.1f} GB"


def check_free_space(width: int, height: int, scratch: os.PathLike, storage=None) -> dict:
    """Refuse (DiskSpaceError) unless the scene's files fit: in ``scratch`` (the temporary
    folder) the scoring ``.npy`` being built (later the scratch pyramid, which is smaller); in
    ``storage`` (a local storage folder, None for remote storage) the ``.npy`` and the tiles.
    Folders on the same file system add up. Returns {folder: bytes needed}."""
    raw = width * height * 3
    pyramid = int(raw * PYRAMID_SHARE)
    needs = {_existing(scratch): raw}
    if storage is not None:
        folder = _existing(storage)
        needs[folder] = needs.get(folder, 0) + raw + pyramid
    by_device: dict[int, tuple[list[Path], int]] = {}
    for folder, need in needs.items():
        device = os.stat(folder).st_dev
        folders, total = by_device.get(device, ([], 0))
        by_device[device] = (folders + [folder], total + need)
    for folders, need in by_device.values():
        free = shutil.disk_usage(folders[0]).free
        if need + RESERVE_BYTES > free:
            raise DiskSpaceError(
                f"not enough free disk space for a {width}x{height} scene: it needs about "
                f"{_gb(need)} on the disk of {', '.join(map(str, folders))} (the scoring file "
                f"{_gb(raw)}, built in the temporary folder and then stored, and deep-zoom tiles "
                f"of about {_gb(pyramid)}) plus {_gb(RESERVE_BYTES)} to spare, and "
                f"{_gb(free)} are free; free some space, or set TMPDIR or STORAGE_URL to a "
                "larger disk"
            )
    return {str(k): v for k, v in needs.items()}

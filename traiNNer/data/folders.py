"""Finding image files in dataset folders and pairing LR files with HR files."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from traiNNer.data.image_io import IMAGE_EXTENSIONS, is_image_file
from traiNNer.utils.errors import DataError


def root_list(value: str | list[str] | None, key: str, dataset_type: str) -> list[Path]:
    """The folder(s) of a `dataroot_*` option as paths; `key` is its YAML path."""
    if value is None or value == []:
        raise DataError(f"{key}: required by dataset type '{dataset_type}'")
    roots = [value] if isinstance(value, str) else value
    return [Path(root).expanduser() for root in roots]


def scan_images(root: Path, key: str) -> list[Path]:
    """All image files under `root` (recursively, sorted, hidden files skipped)."""
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise DataError(f"{key}: folder '{root}' {what}")
    files = sorted(
        path
        for path in root.rglob("*")
        if path.is_file()
        and is_image_file(path)
        and not any(part.startswith(".") for part in path.relative_to(root).parts)
    )
    if not files:
        accepted = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise DataError(f"{key}: folder '{root}' contains no images ({accepted})")
    return files


def _stem_key(path: Path, root: Path) -> PurePosixPath:
    """Relative path without extension: 'sub/0001' for 'root/sub/0001.png'."""
    relative = path.relative_to(root)
    return PurePosixPath(*relative.parent.parts, relative.stem)


def _index_by_stem(files: list[Path], root: Path, key: str) -> dict[PurePosixPath, Path]:
    index: dict[PurePosixPath, Path] = {}
    for path in files:
        stem = _stem_key(path, root)
        if stem in index:
            raise DataError(
                f"{key}: '{index[stem]}' and '{path}' have the same name; "
                "keep one extension per image name"
            )
        index[stem] = path
    return index


def check_filename_tmpl(tmpl: str, key: str) -> None:
    """The template must map different HR names to different LR names."""
    try:
        first, second = tmpl.format("a"), tmpl.format("b")
    except (IndexError, KeyError, ValueError):
        first = second = ""
    if first == second:
        raise DataError(
            f"{key}: '{tmpl}' must contain exactly one '{{}}' placeholder for the HR name, "
            "e.g. '{}' or '{}x4'"
        )


def pair_folders(
    gt_root: Path, lq_root: Path, filename_tmpl: str, gt_key: str, lq_key: str
) -> list[tuple[Path, Path]]:
    """(lq, gt) file pairs: HR 'sub/0001.png' pairs with LR 'sub/<tmpl(0001)>.*'.

    Extensions may differ (HR PNG with LR JPEG). Every file must find a partner.
    """
    gt_index = _index_by_stem(scan_images(gt_root, gt_key), gt_root, gt_key)
    lq_index = _index_by_stem(scan_images(lq_root, lq_key), lq_root, lq_key)
    pairs: list[tuple[Path, Path]] = []
    used: set[PurePosixPath] = set()
    for gt_stem, gt_path in gt_index.items():
        lq_stem = gt_stem.parent / filename_tmpl.format(gt_stem.name)
        lq_path = lq_index.get(lq_stem)
        if lq_path is None:
            raise DataError(
                f"{lq_key}: no LR image named '{lq_stem}.*' in folder '{lq_root}' "
                f"for HR image '{gt_path}' (filename_tmpl '{filename_tmpl}')"
            )
        used.add(lq_stem)
        pairs.append((lq_path, gt_path))
    unmatched = [path for stem, path in lq_index.items() if stem not in used]
    if unmatched:
        raise DataError(
            f"{gt_key}: no HR image in folder '{gt_root}' for LR image '{unmatched[0]}' "
            f"({len(unmatched)} LR file(s) unmatched; filename_tmpl '{filename_tmpl}')"
        )
    return pairs

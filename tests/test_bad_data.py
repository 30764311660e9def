"""Bad data stops a run before iteration 1: exit code 2, one line on stderr naming the
file or the option, and nothing written (no experiments/, no tb_logger/).

Every case runs `train.main` in-process from an empty working folder. The image check's
cache goes to a folder of the test's own (TRAINNER_CACHE_DIR), never to ~/.cache.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import train
from tests.conftest import base_options, write_options, write_png
from tests.test_option_files import _load_test_script
from traiNNer.config.schema import DatasetOptions
from traiNNer.data import build_dataset, integrity
from traiNNer.data.resize import bicubic_downscale
from traiNNer.utils.errors import DataError
from traiNNer.utils.logger import LOGGER_NAME

# ---------------------------------------------------------------------------
# data and runs
# ---------------------------------------------------------------------------


class Case:
    """A paired 2x dataset (train: 4 pairs of 32x32 HR, val: 2) and a working folder."""

    def __init__(self, root: Path) -> None:
        self.data = root / "data"
        self.run = root / "run"
        self.run.mkdir()
        generator = torch.Generator().manual_seed(0)
        for split, count in (("train", 4), ("val", 2)):
            for i in range(count):
                low = torch.rand(3, 4, 4, generator=generator)
                hr = torch.nn.functional.interpolate(low[None], size=(32, 32), mode="bicubic")
                hr = hr[0].clamp(0, 1)
                write_png(self.hr(split, i), hr)
                write_png(self.lr(split, i), bicubic_downscale(hr, 2))
        self.options = base_options(self.data, self.run)
        self.options["datasets"]["train"] = {
            "type": "pairedimagedataset",
            "dataroot_gt": str(self.data / "train" / "hr"),
            "dataroot_lq": str(self.data / "train" / "lr"),
            "lq_size": 8,
            "batch_size_per_gpu": 2,
            "num_worker_per_gpu": 0,
            "dataset_enlarge_ratio": 1,
        }
        self.options["datasets"]["val"]["dataroot_lq"] = str(self.data / "val" / "lr")
        self.options["train"]["total_iter"] = 2
        self.options["train"]["scheduler"] = None
        self.options["val"]["val_freq"] = 2
        self.options["logger"].update(print_freq=1, save_checkpoint_freq=2, use_tb_logger=False)

    def hr(self, split: str, i: int) -> Path:
        return self.data / split / "hr" / f"img{i}.png"

    def lr(self, split: str, i: int) -> Path:
        return self.data / split / "lr" / f"img{i}.png"

    def set(self, dataset: str, **values: Any) -> None:
        self.options["datasets"][dataset].update(values)

    def train(self, *flags: str) -> int:
        return train.main(
            ["-opt", str(write_options(self.run / "train.yml", self.options)), *flags]
        )


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TRAINNER_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def case(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Case:
    made = Case(tmp_path)
    monkeypatch.chdir(made.run)
    return made


def truncate(path: Path) -> None:
    """Keep the header (so the size reads) and lose most of the pixel data."""
    data = path.read_bytes()
    path.write_bytes(data[: max(60, len(data) // 2)])


def write_tiff_la(path: Path, height: int, width: int) -> None:
    """An 8-bit grey + associated-alpha TIFF: Pillow reads its header ('La') but cannot
    convert the pixels to anything the datasets use."""
    pixels = bytes(height * width * 2)
    bits_offset = 8 + len(pixels)
    ifd_offset = bits_offset + 4
    entries = [  # (tag, type 3=SHORT 4=LONG, count, value)
        (256, 3, 1, width),
        (257, 3, 1, height),
        (258, 3, 2, 0),  # BitsPerSample 8, 8: fits inline
        (259, 3, 1, 1),  # no compression
        (262, 3, 1, 1),  # black is zero
        (273, 4, 1, 8),  # pixel data right after the header
        (277, 3, 1, 2),  # two samples per pixel
        (278, 3, 1, height),
        (279, 4, 1, len(pixels)),
        (338, 3, 1, 1),  # ExtraSamples: associated alpha
    ]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        if tag == 258:
            ifd += struct.pack("<HHIHH", tag, kind, count, 8, 8)
        elif kind == 3:
            ifd += struct.pack("<HHIHH", tag, kind, count, value, 0)
        else:
            ifd += struct.pack("<HHII", tag, kind, count, value)
    header = struct.pack("<2sHI", b"II", 42, ifd_offset)
    path.write_bytes(header + pixels + bytes(4) + ifd + struct.pack("<I", 0))


def refused(
    case: Case, capsys: pytest.CaptureFixture[str], *needles: str, flags: tuple[str, ...] = ()
) -> str:
    """Runs training; asserts exit 2, one stderr line holding `needles`, nothing written."""
    capsys.readouterr()
    assert case.train(*flags) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert sorted(p.name for p in case.run.iterdir()) == ["train.yml"]
    return lines[0]


# ---------------------------------------------------------------------------
# folders
# ---------------------------------------------------------------------------


def test_missing_folder(case: Case, capsys: pytest.CaptureFixture[str]) -> None:
    case.set("train", dataroot_gt=str(case.data / "nowhere"))
    refused(case, capsys, "datasets.train.dataroot_gt:", "nowhere", "does not exist")


def test_empty_folder(case: Case, capsys: pytest.CaptureFixture[str]) -> None:
    (case.data / "empty").mkdir()
    case.set("train", dataroot_lq=str(case.data / "empty"))
    refused(case, capsys, "datasets.train.dataroot_lq:", "contains no images")


def test_directory_named_like_an_image(case: Case, capsys: pytest.CaptureFixture[str]) -> None:
    hr = case.hr("val", 1)
    hr.unlink()
    hr.mkdir()  # skipped by the scan: its LR partner is left without an HR image
    refused(case, capsys, "datasets.val.dataroot_gt:", f"LR image '{case.lr('val', 1)}'")


def test_mismatched_folder_counts(case: Case, capsys: pytest.CaptureFixture[str]) -> None:
    case.set("train", dataroot_gt=[str(case.data / "train" / "hr")] * 2)
    refused(case, capsys, "datasets.train.dataroot_lq:", "1 folder(s) given but dataroot_gt has 2")


def test_orphan_lr_without_hr(case: Case, capsys: pytest.CaptureFixture[str]) -> None:
    case.hr("train", 3).unlink()
    refused(case, capsys, "datasets.train.dataroot_gt:", f"'{case.lr('train', 3)}'")


def test_orphan_hr_without_lr(case: Case, capsys: pytest.CaptureFixture[str]) -> None:
    case.lr("train", 2).unlink()
    refused(case, capsys, "datasets.train.dataroot_lq:", f"'{case.hr('train', 2)}'")


# ---------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------


def test_file_that_is_not_an_image(case: Case, capsys: pytest.CaptureFixture[str]) -> None:
    case.hr("train", 1).write_text("not a picture\n", encoding="utf-8")
    refused(case, capsys, "datasets.train.dataroot_gt:", f"'{case.hr('train', 1)}'")


def test_zero_byte_file(case: Case, capsys: pytest.CaptureFixture[str]) -> None:
    case.lr("train", 0).write_bytes(b"")
    refused(case, capsys, "datasets.train.dataroot_lq:", f"'{case.lr('train', 0)}'")


def test_truncated_png_with_a_valid_header(case: Case, capsys: pytest.CaptureFixture[str]) -> None:
    truncate(case.hr("train", 3))
    line = refused(
        case, capsys, f"datasets.train.dataroot_gt: cannot decode image '{case.hr('train', 3)}'"
    )
    assert "skip_corrupt_images: true" in line  # the way out is named


def test_truncated_png_in_the_validation_set(
    case: Case, capsys: pytest.CaptureFixture[str]
) -> None:
    truncate(case.lr("val", 1))
    refused(case, capsys, f"datasets.val.dataroot_lq: cannot decode image '{case.lr('val', 1)}'")


def test_several_corrupt_files_are_one_line(case: Case, capsys: pytest.CaptureFixture[str]) -> None:
    for i in range(3):
        truncate(case.hr("train", i))
    refused(case, capsys, f"'{case.hr('train', 0)}'", "2 more file(s) do not decode")


def test_unsupported_channel_layout(case: Case, capsys: pytest.CaptureFixture[str]) -> None:
    case.hr("train", 2).unlink()  # the LR partner is still img2.png: extensions may differ
    write_tiff_la(case.data / "train" / "hr" / "img2.tiff", 32, 32)
    refused(case, capsys, "datasets.train.dataroot_gt: cannot decode image", "img2.tiff")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(case: Case, capsys: pytest.CaptureFixture[str]) -> None:
    path = case.hr("train", 0)
    path.chmod(0)
    try:
        refused(case, capsys, "datasets.train.dataroot_gt:", f"'{path}'")
    finally:
        path.chmod(0o644)


# ---------------------------------------------------------------------------
# sizes and counts
# ---------------------------------------------------------------------------


def test_lr_not_hr_over_scale(case: Case, capsys: pytest.CaptureFixture[str]) -> None:
    write_png(case.lr("train", 1), torch.rand(3, 15, 16))
    refused(case, capsys, "datasets.train:", f"LR '{case.lr('train', 1)}' is 15x16", "16x16")


def test_lr_larger_than_hr(case: Case, capsys: pytest.CaptureFixture[str]) -> None:
    write_png(case.lr("val", 0), torch.rand(3, 64, 64))
    refused(case, capsys, "datasets.val:", f"LR '{case.lr('val', 0)}' is 64x64")


def test_image_smaller_than_the_crop(case: Case, capsys: pytest.CaptureFixture[str]) -> None:
    case.set("train", lq_size=24)
    refused(case, capsys, "datasets.train.lq_size:", "smaller than the crop size 24")


def test_too_few_images_for_one_batch(case: Case, capsys: pytest.CaptureFixture[str]) -> None:
    case.set("train", batch_size_per_gpu=8)
    refused(case, capsys, "datasets.train:", "fewer than one batch of 8")


def test_dry_run_refuses_the_same(case: Case, capsys: pytest.CaptureFixture[str]) -> None:
    truncate(case.lr("train", 1))
    refused(case, capsys, f"'{case.lr('train', 1)}'", flags=("--dry_run",))
    case.lr("train", 1).unlink()
    write_png(case.lr("train", 1), torch.rand(3, 16, 16))
    case.set("train", batch_size_per_gpu=8)
    refused(case, capsys, "fewer than one batch of 8", flags=("--dry_run",))


# ---------------------------------------------------------------------------
# loader workers, skipping
# ---------------------------------------------------------------------------


def test_corrupt_file_with_workers_is_one_line(
    case: Case, capsys: pytest.CaptureFixture[str]
) -> None:
    case.set("train", num_worker_per_gpu=2)
    truncate(case.lr("train", 2))
    refused(
        case, capsys, f"datasets.train.dataroot_lq: cannot decode image '{case.lr('train', 2)}'"
    )


def test_file_broken_after_the_check_is_one_line_from_a_worker(
    case: Case, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's DataError reaches the user as its own line, not a worker traceback."""
    case.set("train", num_worker_per_gpu=2, persistent_workers=False)
    real_check = train.check_datasets

    def check_then_break(*args: Any, **kwargs: Any) -> integrity.CheckReport:
        report = real_check(*args, **kwargs)
        for i in range(4):  # every training image: whichever is drawn first fails
            truncate(case.hr("train", i))
        return report

    monkeypatch.setattr(train, "check_datasets", check_then_break)
    capsys.readouterr()
    assert case.train() == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: cannot decode image '")
    assert str(case.data / "train" / "hr") in lines[0]
    # Its workers were ended on the spot, not left to the garbage collector's 5 s timeouts.
    assert multiprocessing.active_children() == []


def test_skip_corrupt_images_trains_on_with_one_warning(
    case: Case, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "1000")  # the warning on one console line
    truncate(case.hr("train", 1))
    case.set("train", skip_corrupt_images=True)
    capsys.readouterr()
    assert case.train() == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    warnings = [line for line in captured.out.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1, warnings
    assert "left out 1 of 4 pair(s)" in warnings[0]
    assert f"'{case.hr('train', 1)}'" in warnings[0]
    assert (case.run / "experiments" / "unit_run" / "models").is_dir()


def test_skipping_that_leaves_too_few_is_the_usual_error(
    case: Case, capsys: pytest.CaptureFixture[str]
) -> None:
    for i in range(3):
        truncate(case.lr("train", i))
    case.set("train", skip_corrupt_images=True)
    refused(case, capsys, "datasets.train:", "1 image(s)", "fewer than one batch of 2")


def test_skipping_every_image_is_an_error(case: Case, capsys: pytest.CaptureFixture[str]) -> None:
    for i in range(2):
        truncate(case.hr("val", i))
    case.set("val", skip_corrupt_images=True)
    refused(case, capsys, "datasets.val.dataroot_gt:", "none of the 2 pair(s)")


def test_test_py_refuses_a_corrupt_image(
    case: Case, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from traiNNer.models.sr_model import build_network

    weights = tmp_path / "net.pth"
    torch.save(build_network("paragonsr2_nano", 2, {}).state_dict(), weights)
    truncate(case.lr("val", 0))
    options = {
        "name": "bad_test",
        "scale": 2,
        "num_gpu": "auto",
        "network_g": {"type": "paragonsr2_nano"},
        "path": {"pretrain_network_g": str(weights)},
        "datasets": {
            "test_1": {"type": "singleimagedataset", "dataroot_lq": str(case.data / "val" / "lr")}
        },
    }
    capsys.readouterr()
    code = _load_test_script().main(["-opt", str(write_options(case.run / "test.yml", options))])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(lines) == 1, lines
    expected = f"error: datasets.test_1.dataroot_lq: cannot decode image '{case.lr('val', 0)}'"
    assert lines[0].startswith(expected), lines[0]
    assert sorted(p.name for p in case.run.iterdir()) == ["test.yml"]  # no results/


# ---------------------------------------------------------------------------
# the check itself: cache, warning
# ---------------------------------------------------------------------------


def _datasets(case: Case) -> dict[str, Any]:
    def built(key: str, phase: Any) -> Any:
        return build_dataset(DatasetOptions(**case.options["datasets"][key]), 2, phase, key=key)

    return {"train": built("train", "train"), "val": built("val", "val")}


def test_the_cache_skips_unchanged_files_and_rechecks_changed_ones(
    case: Case, cache_dir: Path
) -> None:
    first = integrity.check_datasets(_datasets(case))
    assert (first.files, first.decoded, first.corrupt) == (12, 12, {})
    assert (cache_dir / integrity.CACHE_FILE_NAME).is_file()
    again = integrity.check_datasets(_datasets(case))
    assert (again.files, again.decoded) == (12, 0)

    touched = case.hr("train", 2)
    stat = touched.stat()
    os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert integrity.check_datasets(_datasets(case)).decoded == 1

    broken = case.lr("val", 1)  # decoded fine and cached, then broken
    truncate(broken)
    with pytest.raises(
        DataError, match=re.escape(f"datasets.val.dataroot_lq: cannot decode image '{broken}'")
    ):
        integrity.check_datasets(_datasets(case))
    broken.unlink()  # mended: decoded again, the rest still from the cache
    write_png(broken, torch.rand(3, 16, 16))
    assert integrity.check_datasets(_datasets(case)).decoded == 1


def test_a_dry_run_after_a_dry_run_decodes_nothing(
    case: Case, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[Path] = []
    real_verify: Callable[[Path], tuple[int, int]] = integrity.verify_image

    def counting(path: Path) -> tuple[int, int]:
        decoded.append(path)
        return real_verify(path)

    monkeypatch.setattr(integrity, "verify_image", counting)
    assert case.train("--dry_run") == 0
    assert len(decoded) == 12  # 4 + 2 pairs
    decoded.clear()
    assert case.train("--dry_run") == 0
    assert decoded == []
    assert sorted(p.name for p in case.run.iterdir()) == ["train.yml"]


def test_an_unusable_cache_only_costs_the_speed_up(case: Case, tmp_path: Path) -> None:
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("", encoding="utf-8")
    report = integrity.check_datasets(_datasets(case), cache_file=blocker / "cache.sqlite3")
    assert (report.decoded, report.corrupt) == (12, {})


def test_skip_warning_lists_the_files_once(case: Case) -> None:
    truncate(case.hr("train", 0))
    truncate(case.lr("train", 0))  # both files of one pair: one item left out, two files named
    truncate(case.lr("train", 3))
    case.set("train", skip_corrupt_images=True)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger(LOGGER_NAME)
    logger.addHandler(handler)
    try:
        datasets = _datasets(case)
        report = integrity.check_datasets(datasets)
    finally:
        logger.removeHandler(handler)
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "left out 2 of 4 pair(s) because 3 file(s) do not decode" in warnings[0]
    for path in (case.hr("train", 0), case.lr("train", 0), case.lr("train", 3)):
        assert f"'{path}'" in warnings[0]
    assert len(report.corrupt) == 3
    assert [lq.name for lq, _ in datasets["train"].pairs] == ["img1.png", "img2.png"]

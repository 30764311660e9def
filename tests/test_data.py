"""Data pipeline: image IO, resizing, datasets, loaders and the demo dataset."""

from __future__ import annotations

import random
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from traiNNer.config.schema import DatasetOptions
from traiNNer.data import build_dataset
from traiNNer.data.bicubic_image_dataset import BicubicImageDataset
from traiNNer.data.demo_dataset import DemoPaths, ensure_demo_dataset
from traiNNer.data.image_io import read_image, write_image
from traiNNer.data.loader import EnlargedSampler, auto_enlarge_ratio, build_dataloader
from traiNNer.data.paired_image_dataset import PairedImageDataset
from traiNNer.data.resize import bicubic_downscale, bicubic_upscale
from traiNNer.data.single_image_dataset import SingleImageDataset
from traiNNer.utils.errors import ConfigError, UserError

# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def _png16_rgb(path: Path, pixels: np.ndarray) -> None:
    """Encode an (H, W, 3) uint16 array as a 16-bit RGB PNG, independently of the code under test."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    height, width, _ = pixels.shape
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in pixels)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def _random_image(channels: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Random float image on exact 8-bit levels."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (channels, height, width), generator=generator).float() / 255


def _nearest_up(image: torch.Tensor, scale: int) -> torch.Tensor:
    return image.repeat_interleave(scale, -2).repeat_interleave(scale, -1)


def _write_nearest_pair(root: Path, name: str, lq_hw: tuple[int, int], scale: int, seed: int):
    """LR random, HR its nearest-neighbour upscale: any HR window of an aligned
    crop must equal the nearest upscale of the LR window."""
    lq = _random_image(3, *lq_hw, seed=seed)
    write_image(lq, root / "lr" / f"{name}.png")
    write_image(_nearest_up(lq, scale), root / "hr" / f"{name}.png")


def _opts(**kwargs) -> DatasetOptions:
    kwargs.setdefault("type", "pairedimagedataset")
    return DatasetOptions(**kwargs)


# ---------------------------------------------------------------------------
# image IO
# ---------------------------------------------------------------------------


def test_8bit_png_round_trip_is_exact(tmp_path: Path) -> None:
    image = _random_image(3, 9, 13)
    write_image(image, tmp_path / "sub" / "a.png")
    back = read_image(tmp_path / "sub" / "a.png")
    assert back.dtype == torch.float32 and back.shape == (3, 9, 13)
    assert torch.equal(back, image)
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["a.png"]  # no temp file left


def test_write_rounds_to_nearest_level(tmp_path: Path) -> None:
    image = torch.full((3, 2, 2), 100.6 / 255)
    write_image(image, tmp_path / "a.png")
    assert torch.equal(read_image(tmp_path / "a.png"), torch.full((3, 2, 2), 101 / 255))


def test_16bit_png_keeps_precision(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 65536, size=(6, 7, 3), dtype=np.uint16)
    pixels[0, 0] = (1, 2, 300)  # values an 8-bit read would collapse
    _png16_rgb(tmp_path / "deep.png", pixels)
    image = read_image(tmp_path / "deep.png")
    expected = torch.from_numpy(pixels.astype(np.float32) / 65535).permute(2, 0, 1)
    assert image.shape == (3, 6, 7)
    torch.testing.assert_close(image, expected, rtol=0, atol=1e-7)
    assert image[0, 0, 0] < image[1, 0, 0] < 1 / 255 < image[2, 0, 0]


def test_grayscale_is_replicated_to_rgb(tmp_path: Path) -> None:
    gray = np.arange(20, dtype=np.uint8).reshape(4, 5) * 12
    Image.fromarray(gray, mode="L").save(tmp_path / "g8.png")
    gray16 = (np.arange(20, dtype=np.uint16).reshape(4, 5) * 3001).astype(np.uint16)
    Image.fromarray(gray16).save(tmp_path / "g16.png")
    for name, values, peak in (("g8.png", gray, 255), ("g16.png", gray16, 65535)):
        image = read_image(tmp_path / name)
        expected = torch.from_numpy(values.astype(np.float32) / peak)
        assert image.shape == (3, 4, 5)
        for channel in image:
            torch.testing.assert_close(channel, expected, rtol=0, atol=1e-7)


def test_rgba_drops_alpha(tmp_path: Path) -> None:
    rgba = np.zeros((3, 4, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2] = 200, 100, 50
    rgba[..., 3] = np.array([0, 128, 255, 7], dtype=np.uint8)  # alpha must not matter
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    assert image.shape == (3, 3, 4)
    assert torch.equal(image[:, 0, 0], torch.tensor([200, 100, 50]) / 255)
    assert torch.equal(image, image[:, :1, :1].expand(3, 3, 4))


@pytest.mark.parametrize("suffix", [".bmp", ".tif", ".webp"])
def test_other_lossless_formats(tmp_path: Path, suffix: str) -> None:
    pixels = (np.arange(5 * 6 * 3) * 7 % 256).astype(np.uint8).reshape(5, 6, 3)
    if suffix == ".webp":
        Image.fromarray(pixels).save(tmp_path / f"x{suffix}", lossless=True)
    else:
        Image.fromarray(pixels).save(tmp_path / f"x{suffix}")
    expected = torch.from_numpy(pixels).permute(2, 0, 1).float() / 255
    assert torch.equal(read_image(tmp_path / f"x{suffix}"), expected)


def test_16bit_tiff_keeps_precision(tmp_path: Path) -> None:
    values = np.array([[1, 2], [40000, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "d.tif")
    image = read_image(tmp_path / "d.tif")
    torch.testing.assert_close(
        image[1], torch.from_numpy(values / 65535).float(), rtol=0, atol=1e-7
    )


def test_jpeg_reads_close_to_source(tmp_path: Path) -> None:
    pixels = np.full((16, 16, 3), (180, 90, 30), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.jpg", quality=95)
    image = read_image(tmp_path / "a.jpg")
    assert image.shape == (3, 16, 16)
    assert (image - torch.tensor([180, 90, 30]).view(3, 1, 1) / 255).abs().max() < 0.03


def test_unreadable_and_missing_files_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(UserError, match=r"broken\.png"):
        read_image(bad)
    with pytest.raises(UserError, match=r"nothere\.png"):
        read_image(tmp_path / "nothere.png")


# ---------------------------------------------------------------------------
# resizing
# ---------------------------------------------------------------------------


def test_bicubic_downscale_matches_saved_png(tmp_path: Path) -> None:
    hr = torch.rand(3, 24, 36, generator=torch.Generator().manual_seed(1))
    lr = bicubic_downscale(hr, 3)
    assert lr.shape == (3, 8, 12)
    write_image(lr, tmp_path / "lr.png")
    assert torch.equal(read_image(tmp_path / "lr.png"), lr)
    assert torch.equal(bicubic_downscale(hr[None], 3), lr[None])
    with pytest.raises(ValueError, match="multiple of scale"):
        bicubic_downscale(hr, 5)


def test_bicubic_resizes_keep_flat_colour_and_range() -> None:
    flat = torch.full((3, 8, 8), 0.4)
    assert torch.allclose(bicubic_upscale(flat, 4), torch.full((3, 32, 32), 0.4))
    assert torch.allclose(bicubic_downscale(flat, 2), torch.full((3, 4, 4), round(0.4 * 255) / 255))
    checker = (torch.arange(64).view(8, 8) % 2).float().expand(3, 8, 8)
    up = bicubic_upscale(checker, 3)
    assert up.shape == (3, 24, 24) and up.min() >= 0 and up.max() <= 1


# ---------------------------------------------------------------------------
# paired dataset
# ---------------------------------------------------------------------------


def test_paired_crops_are_aligned_and_augmented(tmp_path: Path) -> None:
    scale = 2
    _write_nearest_pair(tmp_path, "a", (20, 24), scale, seed=1)
    _write_nearest_pair(tmp_path, "b", (17, 16), scale, seed=2)
    opt = _opts(dataroot_gt=str(tmp_path / "hr"), dataroot_lq=str(tmp_path / "lr"), lq_size=8)
    dataset = PairedImageDataset(opt, scale, "train")
    random.seed(0)
    assert len(dataset) == 2
    for index in (0, 1) * 10:
        item = dataset[index]
        lq, gt = item["lq"], item["gt"]
        assert lq.shape == (3, 8, 8) and gt.shape == (3, 16, 16)
        assert torch.equal(gt, _nearest_up(lq, scale))
        assert Path(item["lq_path"]).parent.name == "lr"
        assert Path(item["gt_path"]).name == Path(item["lq_path"]).name


def test_paired_crop_of_bicubic_lr_matches_hr_region(tmp_path: Path) -> None:
    """LR saved as the bicubic downscale of the HR: the LR crop equals the downscale of
    the HR crop wherever the content is locally flat (bicubic is exact there, and
    the crop borders cannot matter)."""
    scale = 2
    blocks = _random_image(3, 5, 5, seed=3)
    hr = _nearest_up(blocks, 12 * scale)  # 120x120 HR made of flat 24x24 blocks
    write_image(hr, tmp_path / "hr" / "x.png")
    write_image(bicubic_downscale(hr, scale), tmp_path / "lr" / "x.png")
    opt = _opts(
        dataroot_gt=str(tmp_path / "hr"),
        dataroot_lq=str(tmp_path / "lr"),
        lq_size=16,
        use_hflip=False,
        use_rot=False,
    )
    dataset = PairedImageDataset(opt, scale, "train")
    random.seed(5)
    for _ in range(10):
        item = dataset[0]
        lq, gt = item["lq"], item["gt"]
        expected = bicubic_downscale(gt, scale)[:, 2:-2, 2:-2]
        # The antialiased x2 kernel reaches 2 LR pixels out: compare only where
        # that 5x5 neighbourhood is flat.
        local_max = torch.nn.functional.max_pool2d(lq[None], 5, stride=1)[0]
        local_min = -torch.nn.functional.max_pool2d(-lq[None], 5, stride=1)[0]
        flat = (local_max == local_min).all(0)
        assert flat.sum() >= 16
        assert torch.equal(lq[:, 2:-2, 2:-2][:, flat], expected[:, flat])


def test_flips_and_rotations_keep_pair_aligned(tmp_path: Path) -> None:
    # lq_size equals the LR size, so the only thing varying is the augmentation.
    _write_nearest_pair(tmp_path, "a", (8, 8), 3, seed=4)
    opt = _opts(dataroot_gt=str(tmp_path / "hr"), dataroot_lq=str(tmp_path / "lr"), lq_size=8)
    dataset = PairedImageDataset(opt, 3, "train")
    original = read_image(tmp_path / "lr" / "a.png")
    dihedral = [
        t.contiguous()
        for base in (original, original.transpose(-2, -1))
        for t in (base, base.flip(-1), base.flip(-2), base.flip(-1).flip(-2))
    ]
    random.seed(0)
    seen: set[int] = set()
    for _ in range(100):
        item = dataset[0]
        lq, gt = item["lq"], item["gt"]
        assert torch.equal(gt, _nearest_up(lq, 3))
        matches = [i for i, t in enumerate(dihedral) if torch.equal(t, lq)]
        assert matches, "augmented LR is not a flip/rotation of the original"
        seen.add(matches[0])
    assert len(seen) == 8


def test_no_augmentation_when_disabled(tmp_path: Path) -> None:
    _write_nearest_pair(tmp_path, "a", (8, 8), 2, seed=4)
    opt = _opts(
        dataroot_gt=str(tmp_path / "hr"),
        dataroot_lq=str(tmp_path / "lr"),
        lq_size=8,
        use_hflip=False,
        use_rot=False,
    )
    dataset = PairedImageDataset(opt, 2, "train")
    original = read_image(tmp_path / "lr" / "a.png")
    for _ in range(10):
        assert torch.equal(dataset[0]["lq"], original)


def test_paired_val_returns_whole_images_and_mod_crops_hr(tmp_path: Path) -> None:
    lq = _random_image(3, 10, 11, seed=6)
    hr = _random_image(3, 21, 23, seed=7)  # floor(21/2)=10, floor(23/2)=11: accepted
    write_image(lq, tmp_path / "lr" / "p.png")
    write_image(hr, tmp_path / "hr" / "p.png")
    opt = _opts(dataroot_gt=str(tmp_path / "hr"), dataroot_lq=str(tmp_path / "lr"))
    item = PairedImageDataset(opt, 2, "val")[0]
    assert torch.equal(item["lq"], lq)
    assert torch.equal(item["gt"], hr[:, :20, :22])


def test_filename_tmpl_and_root_lists(tmp_path: Path) -> None:
    for folder, names in (("set1", ("0001", "0002")), ("set2", ("0003",))):
        for name in names:
            write_image(_random_image(3, 8, 8), tmp_path / folder / "hr" / f"{name}.png")
            write_image(_random_image(3, 4, 4), tmp_path / folder / "lr" / f"{name}x2.png")
    opt = _opts(
        dataroot_gt=[str(tmp_path / "set1" / "hr"), str(tmp_path / "set2" / "hr")],
        dataroot_lq=[str(tmp_path / "set1" / "lr"), str(tmp_path / "set2" / "lr")],
        filename_tmpl="{}x2",
    )
    dataset = PairedImageDataset(opt, 2, "val")
    names = [(lq.name, gt.name) for lq, gt in dataset.pairs]
    assert names == [
        ("0001x2.png", "0001.png"),
        ("0002x2.png", "0002.png"),
        ("0003x2.png", "0003.png"),
    ]


def test_scale_mismatch_names_both_files_and_sizes(tmp_path: Path) -> None:
    write_image(_random_image(3, 32, 32), tmp_path / "hr" / "img.png")
    write_image(_random_image(3, 15, 16), tmp_path / "lr" / "img.png")
    opt = _opts(dataroot_gt=str(tmp_path / "hr"), dataroot_lq=str(tmp_path / "lr"))
    with pytest.raises(UserError) as info:
        PairedImageDataset(opt, 2, "val")
    message = str(info.value)
    assert str(tmp_path / "hr" / "img.png") in message
    assert str(tmp_path / "lr" / "img.png") in message
    assert "15x16" in message and "32x32" in message and "\n" not in message


def test_missing_folder_is_named(tmp_path: Path) -> None:
    write_image(_random_image(3, 8, 8), tmp_path / "hr" / "a.png")
    opt = _opts(dataroot_gt=str(tmp_path / "hr"), dataroot_lq=str(tmp_path / "nope"))
    with pytest.raises(
        UserError, match=r"datasets\.val\.dataroot_lq: folder '.*nope' does not exist"
    ):
        PairedImageDataset(opt, 2, "val")
    with pytest.raises(UserError, match=r"datasets\.train\.dataroot_lq: required"):
        PairedImageDataset(_opts(dataroot_gt=str(tmp_path / "hr"), lq_size=4), 2, "train")


def test_unmatched_names_are_reported(tmp_path: Path) -> None:
    for name in ("a", "b"):
        write_image(_random_image(3, 8, 8), tmp_path / "hr" / f"{name}.png")
    for name in ("a", "c"):
        write_image(_random_image(3, 4, 4), tmp_path / "lr" / f"{name}.png")
    opt = _opts(dataroot_gt=str(tmp_path / "hr"), dataroot_lq=str(tmp_path / "lr"))
    with pytest.raises(UserError, match=r"'b\.\*' in folder '.*lr'.*b\.png"):
        PairedImageDataset(opt, 2, "val")
    (tmp_path / "hr" / "b.png").unlink()
    with pytest.raises(UserError, match=r"folder '.*hr' for LR image '.*c\.png'"):
        PairedImageDataset(opt, 2, "val")


def test_training_needs_lq_size_and_large_enough_images(tmp_path: Path) -> None:
    _write_nearest_pair(tmp_path, "small", (6, 9), 2, seed=0)
    roots = {"dataroot_gt": str(tmp_path / "hr"), "dataroot_lq": str(tmp_path / "lr")}
    with pytest.raises(UserError, match=r"datasets\.train_1\.lq_size: required"):
        PairedImageDataset(_opts(**roots), 2, "train", key="train_1")
    with pytest.raises(UserError, match=r"lq_size: LR '.*small\.png' is 6x9, smaller than"):
        PairedImageDataset(_opts(lq_size=8, **roots), 2, "train")
    PairedImageDataset(_opts(**roots), 2, "val")  # whole images: no crop size needed


def test_y_channel(tmp_path: Path) -> None:
    write_image(torch.ones(3, 8, 8), tmp_path / "hr" / "w.png")
    write_image(torch.zeros(3, 4, 4), tmp_path / "lr" / "w.png")
    opt = _opts(dataroot_gt=str(tmp_path / "hr"), dataroot_lq=str(tmp_path / "lr"), color="y")
    item = PairedImageDataset(opt, 2, "val")[0]
    assert item["gt"].shape == (1, 8, 8) and item["lq"].shape == (1, 4, 4)
    torch.testing.assert_close(item["gt"], torch.full((1, 8, 8), 235 / 255))
    torch.testing.assert_close(item["lq"], torch.full((1, 4, 4), 16 / 255))


# ---------------------------------------------------------------------------
# bicubic and single datasets, build_dataset
# ---------------------------------------------------------------------------


def test_bicubic_dataset_shapes_and_content(tmp_path: Path) -> None:
    write_image(_random_image(3, 35, 33, seed=8), tmp_path / "hr" / "a.png")
    opt = DatasetOptions(type="bicubicimagedataset", dataroot_gt=str(tmp_path / "hr"), lq_size=6)
    train = BicubicImageDataset(opt, 2, "train")
    item = train[0]
    assert item["lq"].shape == (3, 6, 6) and item["gt"].shape == (3, 12, 12)
    assert item["lq_path"] == item["gt_path"] == str(tmp_path / "hr" / "a.png")
    val = BicubicImageDataset(opt, 2, "val")[0]
    assert val["gt"].shape == (3, 34, 32) and val["lq"].shape == (3, 17, 16)
    assert torch.equal(val["lq"], bicubic_downscale(val["gt"], 2))
    too_big = DatasetOptions(
        type="bicubicimagedataset", dataroot_gt=str(tmp_path / "hr"), lq_size=17
    )
    with pytest.raises(UserError, match=r"a\.png' is 35x33, smaller than the HR crop"):
        BicubicImageDataset(too_big, 2, "train")


def test_single_dataset_items(tmp_path: Path) -> None:
    image = _random_image(3, 5, 7)
    write_image(image, tmp_path / "lr" / "one.png")
    opt = DatasetOptions(type="singleimagedataset", dataroot_lq=str(tmp_path / "lr"))
    dataset = SingleImageDataset(opt, 4, "val")
    item = dataset[0]
    assert set(item) == {"lq", "lq_path"}
    assert torch.equal(item["lq"], image)
    with pytest.raises(UserError, match="cannot be used for training"):
        SingleImageDataset(opt, 4, "train")


def test_build_dataset_uses_registry(tmp_path: Path) -> None:
    write_image(_random_image(3, 8, 8), tmp_path / "lr" / "a.png")
    opt = DatasetOptions(type="SingleImageDataset", dataroot_lq=str(tmp_path / "lr"))
    assert isinstance(build_dataset(opt, 2, "val"), SingleImageDataset)
    with pytest.raises(
        ConfigError,
        match=r"datasets\.val_2\.type: unknown dataset 'pairedimagedatset'; did you mean pairedimagedataset",
    ):
        build_dataset(DatasetOptions(type="pairedimagedatset"), 2, "val", key="val_2")


# ---------------------------------------------------------------------------
# loader
# ---------------------------------------------------------------------------


@pytest.fixture
def pair_folder(tmp_path: Path) -> Path:
    for index in range(5):
        _write_nearest_pair(tmp_path, f"im{index}", (12, 12), 2, seed=index)
    return tmp_path


def _loader_opts(root: Path, **kwargs) -> DatasetOptions:
    kwargs.setdefault("num_worker_per_gpu", 0)
    return _opts(dataroot_gt=str(root / "hr"), dataroot_lq=str(root / "lr"), lq_size=8, **kwargs)


def test_train_loader_batches_and_enlarge_ratio(pair_folder: Path) -> None:
    opt = _loader_opts(pair_folder, batch_size_per_gpu=3, dataset_enlarge_ratio=4)
    dataset = PairedImageDataset(opt, 2, "train")
    loader = build_dataloader(dataset, opt, "train", seed=1, use_cuda=False)
    assert isinstance(loader.sampler, EnlargedSampler)
    assert len(loader.sampler) == 5 * 4
    assert len(loader) == 20 // 3  # drop_last
    batches = list(loader)
    assert len(batches) == 6
    assert batches[0]["lq"].shape == (3, 3, 8, 8) and batches[0]["gt"].shape == (3, 3, 16, 16)
    assert len(batches[0]["lq_path"]) == 3
    assert not loader.pin_memory

    override = build_dataloader(dataset, opt, "train", batch_size=2, seed=1, use_cuda=False)
    assert next(iter(override))["lq"].shape[0] == 2 and len(override) == 10


def test_auto_enlarge_ratio_gives_a_thousand_batches(pair_folder: Path) -> None:
    opt = _loader_opts(pair_folder, batch_size_per_gpu=4)
    dataset = PairedImageDataset(opt, 2, "train")
    loader = build_dataloader(dataset, opt, "train", seed=0, use_cuda=False)
    assert len(loader) >= 1000
    assert isinstance(loader.sampler, EnlargedSampler)
    assert len(loader.sampler) == 5 * auto_enlarge_ratio(5, 4)
    assert auto_enlarge_ratio(5, 4) == 800
    assert auto_enlarge_ratio(10_000_000, 16) == 1
    assert auto_enlarge_ratio(5, 4, world_size=2) == 1600


def test_too_few_samples_for_a_batch_is_a_user_error(pair_folder: Path) -> None:
    opt = _loader_opts(pair_folder, batch_size_per_gpu=8, dataset_enlarge_ratio=1)
    dataset = PairedImageDataset(opt, 2, "train")
    with pytest.raises(UserError, match="dataset_enlarge_ratio"):
        build_dataloader(dataset, opt, "train", seed=0, use_cuda=False)


def test_seeded_loaders_repeat_with_workers(pair_folder: Path) -> None:
    opt = _loader_opts(
        pair_folder, batch_size_per_gpu=2, dataset_enlarge_ratio=2, num_worker_per_gpu=1
    )
    dataset = PairedImageDataset(opt, 2, "train")
    loader_a = build_dataloader(dataset, opt, "train", seed=7, use_cuda=False)
    loader_b = build_dataloader(dataset, opt, "train", seed=7, use_cuda=False)
    assert loader_a.num_workers == 1 and loader_a.prefetch_factor == 2
    first_a, first_b = next(iter(loader_a)), next(iter(loader_b))
    assert first_a["lq_path"] == first_b["lq_path"]
    assert torch.equal(first_a["lq"], first_b["lq"])


def test_val_loader_is_ordered_batch_one(pair_folder: Path) -> None:
    opt = _loader_opts(pair_folder, batch_size_per_gpu=4)
    dataset = PairedImageDataset(opt, 2, "val")
    loader = build_dataloader(dataset, opt, "val", seed=None, use_cuda=False)
    paths = [batch["lq_path"][0] for batch in loader]
    assert paths == [str(lq) for lq, _ in dataset.pairs]
    assert next(iter(loader))["lq"].shape == (1, 3, 12, 12)


def test_distributed_shards_are_disjoint_and_reshuffled() -> None:
    world = 3
    samplers = [EnlargedSampler(12, 1, seed=5, rank=r, world_size=world) for r in range(world)]
    shards = [list(s) for s in samplers]
    assert all(len(shard) == 4 for shard in shards)
    assert sorted(i for shard in shards for i in shard) == list(range(12))

    enlarged = [EnlargedSampler(7, 3, seed=5, rank=r, world_size=world) for r in range(world)]
    counts = np.bincount([i for s in enlarged for i in s], minlength=7)
    assert all(len(s) == 7 for s in enlarged)  # ceil(21 / 3)
    assert counts.sum() == 21 and counts.min() == 3 and counts.max() == 3

    before = list(samplers[0])
    samplers[0].set_epoch(1)
    assert list(samplers[0]) != before
    again = EnlargedSampler(12, 1, seed=5, rank=0, world_size=world)
    again.set_epoch(1)
    assert list(again) == list(samplers[0])


def test_distributed_loader_needs_a_seed(pair_folder: Path) -> None:
    opt = _loader_opts(pair_folder, batch_size_per_gpu=2)
    dataset = PairedImageDataset(opt, 2, "train")
    with pytest.raises(ValueError, match="seed"):
        build_dataloader(dataset, opt, "train", seed=None, rank=1, world_size=2, use_cuda=False)
    loader = build_dataloader(dataset, opt, "train", seed=3, rank=1, world_size=2, use_cuda=False)
    assert isinstance(loader.sampler, EnlargedSampler) and loader.sampler.rank == 1


# ---------------------------------------------------------------------------
# demo dataset
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoPaths:
    pytest.importorskip("skimage")
    return ensure_demo_dataset(tmp_path_factory.mktemp("data") / "demo", scale=2)


def test_demo_dataset_layout(demo: DemoPaths) -> None:
    train = sorted(demo.train_hr.glob("*.png"))
    val_hr = sorted(demo.val_hr.glob("*.png"))
    val_lr = sorted(demo.val_lr.glob("*.png"))
    assert len(train) >= 4 and len(val_hr) == 3
    assert demo.val_lr == demo.root / "val" / "lr_x2"
    assert [p.name for p in val_lr] == [p.name for p in val_hr]
    assert not {p.name for p in train} & {p.name for p in val_hr}  # held out
    for path in train:
        assert max(read_image(path).shape[-2:]) <= 512
    for hr_path, lr_path in zip(val_hr, val_lr, strict=True):
        hr = read_image(hr_path)
        assert hr.shape == (3, 192, 192)
        assert torch.equal(read_image(lr_path), bicubic_downscale(hr, 2))
    leftovers = [p for p in demo.root.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_demo_dataset_is_idempotent_and_adds_scales(demo: DemoPaths) -> None:
    files = sorted(p for p in demo.root.rglob("*") if p.is_file())
    stamps = {p: p.stat().st_mtime_ns for p in files}
    assert ensure_demo_dataset(demo.root, scale=2) == demo
    assert {p: p.stat().st_mtime_ns for p in files} == stamps
    x3 = ensure_demo_dataset(demo.root, scale=3)
    assert x3.val_lr.name == "lr_x3"
    assert [read_image(p).shape for p in sorted(x3.val_lr.glob("*.png"))] == [(3, 64, 64)] * 3
    assert {p: p.stat().st_mtime_ns for p in files} == stamps


def test_demo_dataset_refuses_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a complete demo dataset"):
        ensure_demo_dataset(tmp_path / "demo")
    assert (tmp_path / "demo" / "notes.txt").read_text() == "mine"

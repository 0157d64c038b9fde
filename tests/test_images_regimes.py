import numpy as np
import polars as pl
import pytest
import torch
from PIL import Image

from vldistill.data.images import ImageBank, load_image_bank
from vldistill.data.manifest import write_manifest
from vldistill.data.regimes import regime_fraction, select_regime


def write_images(root, n, size=16):
    rng = np.random.default_rng(0)
    arrays = {}
    for i in range(n):
        image_id = f"img-{i}"
        array = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        (root / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(root / "images" / f"{image_id}.png")
        arrays[image_id] = array
    table = pl.DataFrame({
        "image_id": list(arrays), "image_path": [f"images/{i}.png" for i in arrays],
        "domain": ["source"] * n, "width": [size] * n, "height": [size] * n, "scene": [None] * n,
    })
    write_manifest(table, root / "manifest" / "train" / "images.parquet", "images")
    return arrays


def test_bank_returns_the_decoded_pixels_normalised(tmp_path):
    arrays = write_images(tmp_path, 5)
    bank = load_image_bank(tmp_path, [tmp_path / "manifest/train/images.parquet"], 16,
                           progress=False)
    batch = bank.batch(["img-3", "img-0"])
    assert batch.shape == (2, 3, 16, 16)
    expected = torch.from_numpy(arrays["img-3"]).permute(2, 0, 1).float() / 127.5 - 1
    assert torch.allclose(batch[0], expected)
    assert batch.min() >= -1 and batch.max() <= 1


def test_bank_resizes_and_names_missing_ids(tmp_path):
    write_images(tmp_path, 2, size=20)
    bank = load_image_bank(tmp_path, [tmp_path / "manifest/train/images.parquet"], 8,
                           progress=False)
    assert bank.pixels.shape == (2, 3, 8, 8)
    with pytest.raises(KeyError, match="img-9"):
        bank.batch(["img-9"])


def test_bank_names_an_unreadable_image(tmp_path):
    write_images(tmp_path, 2)
    (tmp_path / "images" / "img-1.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="img-1"):
        load_image_bank(tmp_path, [tmp_path / "manifest/train/images.parquet"], 16,
                        progress=False)


def test_bank_rejects_bad_pixels():
    with pytest.raises(ValueError, match="uint8"):
        ImageBank(["a"], torch.zeros(1, 3, 4, 4))


def examples(n_images=200, per_image=3):
    return pl.DataFrame({
        "image_id": [f"img-{i:04d}" for i in range(n_images) for _ in range(per_image)],
        "question_id": [f"q{i}-{k}" for i in range(n_images) for k in range(per_image)],
    })


def test_regime_names():
    assert regime_fraction("full") == 1.0
    assert regime_fraction("lowshot-10") == pytest.approx(0.1)
    assert regime_fraction("lowshot-0.5") == pytest.approx(0.005)
    for bad in ("lowshot-0", "lowshot-150", "lowshot-x", "half"):
        with pytest.raises(ValueError, match="lowshot-<percent>"):
            regime_fraction(bad)


def test_lowshot_keeps_whole_images_and_the_right_fraction():
    table = examples()
    kept = select_regime(table, "lowshot-10", seed=0)
    assert kept["image_id"].n_unique() == 20
    assert len(kept) == 60  # every question of a kept image stays
    assert select_regime(table, "full", seed=0).equals(table)


def test_lowshot_subsets_are_nested_seeded_and_order_free():
    table = examples()
    small = set(select_regime(table, "lowshot-5", seed=1)["image_id"])
    large = set(select_regime(table, "lowshot-20", seed=1)["image_id"])
    assert small < large
    shuffled = table.sample(fraction=1.0, shuffle=True, seed=3)
    assert set(select_regime(shuffled, "lowshot-5", seed=1)["image_id"]) == small
    assert set(select_regime(table, "lowshot-5", seed=2)["image_id"]) != small


def test_bank_batches_cover_the_asked_rows_in_order():
    from vldistill.data.video import ClipBank

    pixels = torch.arange(5 * 2 * 3 * 2 * 2, dtype=torch.int64).remainder(256).to(torch.uint8)
    bank = ClipBank([f"c{i}" for i in range(5)], pixels.reshape(5, 2, 3, 2, 2))
    whole = list(bank.batches(2))
    assert [len(b) for b in whole] == [2, 2, 1]
    assert torch.equal(torch.cat(whole), bank.at(torch.arange(5)))
    part = list(bank.batches(2, rows=(1, 4)))
    assert [len(b) for b in part] == [2, 1]
    assert torch.equal(torch.cat(part), bank.at(torch.arange(1, 4)))
    assert list(bank.batches(2, rows=(3, 3))) == []

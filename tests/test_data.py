import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from core.data import DataError, UploadLimits, builtin_side, load_dataset, read_upload, save_upload, small_builtin
from core.data import builtin


def test_digits_is_offline_and_in_unit_range():
    data = load_dataset("digits")
    assert data.x.shape == (1797, 1, 8, 8) and data.x.dtype == np.float32
    assert 0.0 <= data.x.min() and data.x.max() == 1.0
    assert data.n_classes == 10 and data.y.dtype == np.int64


def test_usps_and_mnist_test_from_the_data_folder(shared_data):
    usps = load_dataset("usps")
    assert usps.x.shape == (9298, 1, 16, 16)
    test = load_dataset("mnist-test")
    assert test.x.shape == (10000, 1, 28, 28)
    assert np.bincount(test.y)[0] == 980  # the published count of zeros in MNIST's test split


def test_offline_without_file_names_the_file_and_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("CLUSTERLAB_DATA", str(tmp_path / "empty"))

    def offline(*args, **kwargs):
        raise OSError("no network")
    monkeypatch.setattr("sklearn.datasets.fetch_openml", offline)
    with pytest.raises(DataError, match=r"usps\.npz.*CLUSTERLAB_DATA"):
        load_dataset("usps")


def test_download_is_converted_and_cached_once(tmp_path, monkeypatch):
    monkeypatch.setenv("CLUSTERLAB_DATA", str(tmp_path / "empty"))
    calls = []

    class Bunch:  # OpenML's USPS: 256 features in [-1, 1], labels "1".."10" with 10 meaning 0
        data = np.full((20, 256), -1.0)
        target = np.array([str(1 + i % 10) for i in range(20)])

    def fake_fetch(name, **kwargs):
        calls.append(name)
        return Bunch()
    monkeypatch.setattr("sklearn.datasets.fetch_openml", fake_fetch)
    first = load_dataset("usps")
    second = load_dataset("usps")
    assert calls == ["usps"]
    assert first.x.shape == (20, 1, 16, 16) and first.x.max() == 0.0
    assert sorted(set(second.class_names)) == [str(d) for d in range(10)]


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _png(value: int, size=(8, 8), mode="L") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, value if mode == "L" else (value, 0, 0)).save(buffer, "PNG")
    return buffer.getvalue()


def test_zip_of_class_folders_is_labelled_by_folder():
    members = {f"set/{cls}/{i}.png": _png(40 * i) for cls in ("cat", "dog") for i in range(3)}
    data, report = read_upload("pets.zip", _zip(members), n_clusters=2)
    assert data.class_names == ["cat", "dog"] and list(np.bincount(data.y)) == [3, 3]
    assert report.labelled and report.image_shape == (1, 8, 8)


def test_zip_of_flat_images_is_unlabelled_resized_and_skips_unreadable_members():
    members = {f"{i}.png": _png(10 * i, size=(8, 8) if i < 4 else (12, 10)) for i in range(5)}
    members["notes.txt"] = b"not an image"
    data, report = read_upload("flat.zip", _zip(members), n_clusters=2)
    assert data.y is None and data.x.shape == (5, 1, 8, 8)  # the most common size wins
    assert report.n_skipped == 1


def test_colour_images_keep_three_channels():
    members = {f"c/{i}.png": _png(50 + i, mode="RGB") for i in range(4)}
    data, _ = read_upload("rgb.zip", _zip(members), n_clusters=2)
    assert data.x.shape == (4, 3, 8, 8)


@pytest.mark.parametrize("name, payload, message", [
    ("bad.zip", b"PK\x03\x04 this is not a zip", "corrupt"),
    ("evil.zip", _zip({"../escape.png": _png(1), "a.png": _png(2)}), "outside the archive"),
    ("evil2.zip", _zip({"/etc/abs.png": _png(1)}), "outside the archive"),
    ("text.zip", _zip({"a.txt": b"x", "b.txt": b"y"}), "no readable image"),
    ("few.zip", _zip({f"{i}.png": _png(i) for i in range(5)}), "at least 20"),
    ("data.csv", b"1,2,3", "upload an .npz"),
])
def test_bad_uploads_are_refused_with_a_clear_message(name, payload, message):
    with pytest.raises(DataError, match=message):
        read_upload(name, payload, n_clusters=10)


def test_zip_bombs_are_refused_by_count_and_by_size():
    members = {f"{i}.png": _png(i) for i in range(30)}
    with pytest.raises(DataError, match="more than the limit"):
        read_upload("many.zip", _zip(members), limits=UploadLimits(max_files=10))
    big = {"big.bin": b"\0" * 200_000, **members}
    with pytest.raises(DataError, match="MiB"):
        read_upload("big.zip", _zip(big), limits=UploadLimits(max_bytes=100_000))


def test_npz_upload_and_pickled_arrays_refused():
    buffer = io.BytesIO()
    np.savez(buffer, x=np.random.default_rng(0).integers(0, 255, (30, 6, 6), dtype=np.uint8), y=np.arange(30) % 3)
    data, report = read_upload("mine.npz", buffer.getvalue(), n_clusters=3)
    assert data.x.shape == (30, 1, 6, 6) and report.labelled

    pickled = io.BytesIO()
    np.savez(pickled, x=np.array([{"a": 1}] * 30, dtype=object))
    with pytest.raises(DataError, match="not a readable .npz"):
        read_upload("pickled.npz", pickled.getvalue(), n_clusters=3)


def test_refused_upload_writes_nothing_and_accepted_one_round_trips(tmp_path):
    uploads = tmp_path / "uploads"
    with pytest.raises(DataError):
        read_upload("evil.zip", _zip({"../x.png": _png(1)}), n_clusters=2)
    assert not uploads.exists()
    members = {f"{cls}/{i}.png": _png(30 * i) for cls in ("a", "b") for i in range(3)}
    data, _ = read_upload("ab.zip", _zip(members), n_clusters=2)
    path = save_upload(data, uploads)
    again = load_dataset(str(path))
    assert again.class_names == ["a", "b"]
    np.testing.assert_allclose(again.x, data.x, atol=1 / 255)


def test_builtin_table_names_every_documented_set():
    assert set(builtin.BUILTINS) == {"digits", "usps", "mnist", "mnist-test", "fashion-mnist"}


@pytest.mark.parametrize("name, side", [("digits", 8), ("usps", 16), ("mnist-test", 28), ("fashion-mnist", 28),
                                        ("my-upload", None)])
def test_builtin_side_is_known_before_loading(name, side):
    assert builtin_side(name) == side


@pytest.mark.parametrize("name, small", [("digits", True), ("usps", False), ("mnist-test", False), ("my-upload", False)])
def test_small_builtin_is_digits_and_never_an_upload(name, small):
    assert small_builtin(name) is small

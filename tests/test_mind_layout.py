"""Dataset layouts: one folder, train/ valid/ (dev/) test/, and MIND's archive folder names."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsrec_cli.errors import InputError
from newsrec_cli.mind import find_splits

NEWS = "N1\tnews\tworld\tA title\t\t\t[]\t[]\n"


def _folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "news.tsv").write_text(NEWS, encoding="utf-8")
    (path / "behaviors.tsv").write_text("", encoding="utf-8")
    return path


def test_single_folder_and_split_folders(tmp_path: Path) -> None:
    assert find_splits(_folder(tmp_path / "one")) == {"all": tmp_path / "one"}
    parent = tmp_path / "parent"
    _folder(parent / "train")
    _folder(parent / "dev")
    _folder(parent / "test")
    assert find_splits(parent) == {
        "train": parent / "train",
        "valid": parent / "dev",
        "test": parent / "test",
    }


def test_archive_folder_names(tmp_path: Path) -> None:
    _folder(tmp_path / "MINDsmall_train")
    _folder(tmp_path / "MINDsmall_dev")
    _folder(tmp_path / "notes_misc")  # not a split name: ignored
    assert find_splits(tmp_path) == {
        "train": tmp_path / "MINDsmall_train",
        "valid": tmp_path / "MINDsmall_dev",
    }
    _folder(tmp_path / "MINDlarge_train")
    with pytest.raises(InputError, match="two train folders"):
        find_splits(tmp_path)


def test_not_a_dataset(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a MIND dataset"):
        find_splits(tmp_path)
    with pytest.raises(InputError, match="dataset folder not found"):
        find_splits(tmp_path / "missing")

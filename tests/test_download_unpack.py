"""Unpacking an archive: members that would land outside the target folder (zip-slip) are refused
before anything is written, and the archive is removed; a normal archive unpacks with its single
top folder dropped."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from newsrec_cli.mind.download import DATASETS, MARKER, DownloadError, unpack

ARCHIVE = DATASETS["demo"][0]


def make_zip(path: Path, members: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return path


@pytest.mark.parametrize(
    "evil",
    [
        "../escaped.txt",
        "MINDdemo_train/../../escaped.txt",
        "/tmp/newsrec-zip-slip-absolute.txt",
        "a/../../escaped.txt",
    ],
)
def test_members_outside_the_folder_are_refused(tmp_path: Path, evil: str) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    archive = make_zip(tmp_path / "evil.zip", {"MINDdemo_train/news.tsv": "N1\n", evil: "gotcha\n"})
    with pytest.raises(DownloadError, match="unsafe member path") as err:
        unpack(archive, dest / "train", ARCHIVE)
    assert "it was removed" in str(err.value)
    assert not archive.exists()
    assert not (tmp_path / "escaped.txt").exists() and not (dest / "escaped.txt").exists()
    assert not Path("/tmp/newsrec-zip-slip-absolute.txt").exists()
    assert not (dest / "train").exists() and not (dest / "train.tmp").exists()


def test_a_normal_archive_unpacks_without_its_top_folder(tmp_path: Path) -> None:
    archive = make_zip(
        tmp_path / "ok.zip", {"MINDdemo_train/news.tsv": "N1\n", "MINDdemo_train/behaviors.tsv": "1\n"}
    )
    files = unpack(archive, tmp_path / "train", ARCHIVE)
    assert files == ["behaviors.tsv", "news.tsv"]
    assert (tmp_path / "train" / "news.tsv").read_text() == "N1\n"
    assert (tmp_path / "train" / MARKER).is_file()

"""The folder layout of a MIND dataset: one folder, or train/ valid/ (dev/) test/ beneath one.

Its own module so that the protocol (which needs the name of a single folder's split) and the
dataset loader (which needs the protocol) do not import each other.
"""

from __future__ import annotations

from pathlib import Path

from newsrec_cli.errors import InputError

SPLIT_FOLDERS = {"train": "train", "valid": "valid", "dev": "valid", "test": "test"}
SINGLE = "all"


def find_splits(path: str | Path) -> dict[str, Path]:
    """Map split name to folder: {"all": path} for a single MIND folder, else train/valid/test.

    MIND's own archives unpack to folders named train/ and dev/: dev/ is read as valid. Folders
    named like the archives (MINDsmall_train/, MINDsmall_dev/, MINDsmall_test/) work too.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("dataset folder not found", path=path)
    if not path.is_dir():
        raise InputError(
            "expected a MIND folder (news.tsv, behaviors.tsv) or a parent of train/ valid/ test/", path=path
        )
    if (path / "news.tsv").exists():
        return {SINGLE: path}
    found: dict[str, Path] = {}
    for folder, name in SPLIT_FOLDERS.items():
        if (path / folder / "news.tsv").exists() and name not in found:
            found[name] = path / folder
    if not found:
        # MIND's archives unzipped side by side: MINDsmall_train/, MINDsmall_dev/ (and _test/).
        for child in sorted(path.iterdir()):
            prefix, _, suffix = child.name.lower().rpartition("_")
            name = SPLIT_FOLDERS.get(suffix)
            if prefix and name and (child / "news.tsv").exists():
                if name in found:
                    raise InputError(
                        f"two {name} folders ({found[name].name}, {child.name}): point at one dataset",
                        path=path,
                    )
                found[name] = child
    if not found:
        raise InputError(
            "no news.tsv here nor in train/, valid/ (dev/) or test/: not a MIND dataset", path=path
        )
    return found

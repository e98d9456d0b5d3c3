"""The JSON manifests that name their format (a run's config.json, a study's tune.json, a store's
or a graph's meta.json, an export's export.json): read one, or say in one line why it is not one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from newsrec_cli.errors import InputError


def read_manifest(path: Path, form: str, what: str) -> dict[str, Any]:
    """The JSON object at `path` whose "format" is `form`; InputError otherwise, naming `what`
    the file should have been (e.g. "the config.json of a run")."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"not readable ({exc.strerror or exc})", path=path) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"not valid JSON ({exc})", path=path) from None
    if not isinstance(data, dict) or data.get("format") != form:
        raise InputError(f"not {what} (format is not {form!r})", path=path, field="format")
    return data

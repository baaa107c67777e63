"""Appending to a dataset another writer made (LeRobot, an older hmpc): a new batch's parquet files
take the schema of the dataset's files, so readers that load every file as one table (LeRobot's
``load_dataset("parquet", ...)`` with the features of info.json) can still load the dataset.

Columns the dataset has and hmpc does not write (LeRobot's ``next.reward``, ``next.done``, the
per-episode stats of ``timestamp`` or ``frame_index``) are added as nulls of their type: unknown
for these episodes, which is what a video-only episode's reward is. A camera hmpc does not record
cannot be filled that way (its mp4 files must exist), so :func:`check_cameras` refuses those
datasets before anything is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hmpc.data._meta import EpisodeRef, fixed_list
from hmpc.data._stats import typed_stats
from hmpc.data.video import DatasetError


def check_cameras(root: Path, info: dict[str, Any] | None, video_key: str) -> None:
    """Refuse to append episodes of camera ``video_key`` alone to a dataset with other cameras."""
    if info is None:
        return
    others = [k for k, f in info["features"].items() if f.get("dtype") in ("video", "image") and k != video_key]
    if others:
        raise DatasetError(
            f"cannot append to {root}: its episodes also have the camera(s) {others}, which the new "
            f"episodes ({video_key} only) lack, and LeRobot readers need every camera of every "
            "episode; write the new episodes to a new output folder")


def conform(table: pa.Table, schema: pa.Schema | None) -> pa.Table:
    """``table`` in ``schema``'s columns, order and types: a column it lacks becomes nulls of the
    schema's type, a shared column is cast to the schema's type (a fixed-size list to LeRobot's
    plain list; DatasetError where arrow cannot), and columns only ``table`` has (the first
    actions) follow. ``schema`` None (a new dataset): ``table`` as it is."""
    if schema is None:
        return table
    cols: dict[str, pa.ChunkedArray | pa.Array] = {}
    for field in schema:
        if field.name not in table.column_names:
            cols[field.name] = pa.nulls(table.num_rows, field.type)
            continue
        col = table[field.name]
        if col.type != field.type:
            try:
                col = col.cast(field.type)  # safe casts only: a lossy one raises
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
                raise DatasetError(f"column {field.name!r}: the dataset's files hold {field.type}, "
                                   f"the new episodes {col.type}, and one cannot be cast to the "
                                   f"other ({err}); write them to a new output folder") from err
        cols[field.name] = col
    for name in table.column_names:
        cols.setdefault(name, table[name])
    out = pa.table(cols)
    if out.schema.remove_metadata() == schema.remove_metadata() and schema.metadata:
        out = out.replace_schema_metadata(schema.metadata)  # e.g. the HF features a LeRobot file carries
    return out


def conform_bytes(data: bytes, reference: Path | None) -> bytes:
    """The parquet ``data`` conformed to the schema of the file ``reference`` (None: as it is);
    ``data`` itself when its schema is already the reference's (hmpc's own datasets)."""
    if reference is None or not reference.is_file():
        return data
    schema = pq.read_schema(reference)
    if pq.read_schema(pa.BufferReader(data)).equals(schema, check_metadata=True):
        return data
    return parquet_bytes(conform(pq.read_table(pa.BufferReader(data)), schema))


def last_file(root: Path, tmp: Path, rel: str, files: list[Path]) -> Path | None:
    """The last of ``files`` (under ``root``) other than ``rel`` itself (left by an interrupted
    publish), as staged under ``tmp`` when a backfill rewrote it there; None when there is none."""
    earlier = [p for p in files if p.relative_to(root).as_posix() != rel]
    if not earlier:
        return None
    staged = tmp / earlier[-1].relative_to(root)
    return staged if staged.is_file() else earlier[-1]


def backfill_actions(root: Path, tmp: Path, info: dict[str, Any] | None, refs: Sequence[EpisodeRef],
                      action_dim: int | None) -> list[str]:
    """When this batch adds the ``action`` feature, stage the dataset's earlier data files in
    ``tmp`` with an all-null action column (every data file holds every feature info.json
    lists, as LeRobot and the loader expect), and its meta/episodes files with null action stats
    (one schema for them all); returns their paths relative to ``root``."""
    if info is None or action_dim is None or "action" in info["features"]:
        return []
    staged = []
    for path in sorted({r.data_path for r in refs}):
        table = pq.read_table(path)
        if "action" in table.column_names:  # staged by an earlier, interrupted publish
            continue
        n = table.num_rows
        nulls = fixed_list(np.zeros((n, action_dim), np.float32), np.zeros(n, bool))
        at = table.column_names.index("observation.state") + 1
        rel = path.relative_to(root).as_posix()
        write_parquet(tmp / rel, table.add_column(at, "action", nulls))
        staged.append(rel)
    for path in sorted((root / "meta" / "episodes").glob("chunk-*/file-*.parquet")):
        table = pq.read_table(path)
        if any(name.startswith("stats/") for name in table.column_names) \
                and "stats/action/count" not in table.column_names:
            rel = path.relative_to(root).as_posix()
            write_parquet(tmp / rel, typed_stats(table, has_actions=True))
            staged.append(rel)
    return staged


def parquet_bytes(table: pa.Table) -> bytes:
    """The bytes ``pq.write_table(table, path)`` writes."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def write_parquet(path: Path, table: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)

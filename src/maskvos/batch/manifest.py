"""What a batch runs: one `BatchItem` per video, read from a CSV or JSON Lines manifest or from a
DAVIS-layout dataset folder.

A manifest row names a video (`source`: a video file or a folder of frames) and its prompt: a mask
PNG or a folder of mask PNGs (`prompt`, optionally `frame` and `obj_id`), and/or clicks (`points`:
"x,y,label;x,y,label" or a JSON list of [x, y, label]) and a box (`box`: "x0,y0,x1,y1"). `out`
names the video's results folder (default: `<batch out>/<video name>/`). Relative paths are taken
from the manifest's folder. A row that cannot be understood is not an error of the batch: its item
carries the one-sentence reason (`problem`) and fails alone when the batch runs.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from maskvos.errors import MaskvosError
from maskvos.eval.davis import dataset_dirs

COLUMNS = ("source", "prompt", "frame", "points", "box", "obj_id", "out")


class ManifestError(MaskvosError):
    """A manifest that cannot be read at all (missing, empty, not CSV / JSON Lines / a dataset)."""


@dataclass(frozen=True)
class BatchItem:
    """One video of a batch.

    Attributes:
        name: the video's name (its results folder under the batch's out, and its key in the ledger).
        row: where it came from ("row 3", "sequence bear"), for messages.
        source: video file or frame folder.
        prompt: mask PNG or folder of mask PNGs; with `first_appearance`, an annotation folder whose
            objects are prompted on the first frame each appears on (the DAVIS protocol).
        points: (x, y, label) clicks on `frame`; box: x0, y0, x1, y1 on `frame`.
        out: the results folder (None: `<batch out>/<name>`).
        problem: why the row cannot run (it fails with this sentence), or None.
    """

    name: str
    row: str
    source: str
    prompt: str | None = None
    frame: int = 0
    points: tuple[tuple[float, float, int], ...] = ()
    box: tuple[float, float, float, float] | None = None
    obj_id: int | None = None
    out: str | None = None
    first_appearance: bool = False
    problem: str | None = None

    def out_dir(self, batch_out: Path) -> Path:
        return Path(self.out) if self.out else batch_out / self.name


def read_manifest(path: str | Path) -> list[BatchItem]:
    """The items of a CSV (with a header row) or JSON Lines manifest, or of a DAVIS-layout dataset
    folder (`JPEGImages/<seq>/`, `Annotations/<seq>/`: every sequence, prompted by its annotations).

    Raises:
        ManifestError: `path` is missing, empty or none of these.
    """
    path = Path(path).absolute()  # rows name absolute paths: workers may run elsewhere (Ray)
    if path.is_dir():
        return _dataset_items(path)
    if not path.is_file():
        raise ManifestError(f"Manifest '{path}' does not exist; pass a CSV or JSON Lines file or a DAVIS-layout dataset folder.")
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    if not text.strip():
        raise ManifestError(f"Manifest '{path}' is empty; give one video per row (columns {', '.join(COLUMNS)}).")
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json") or text.lstrip().startswith("{"):
        rows = _jsonl_rows(text)
    else:
        rows = _csv_rows(text, path)
    items = [_item(row, f"row {num}", path.parent) for num, row in rows]
    if not items:
        raise ManifestError(f"Manifest '{path}' has no video rows; give one video per row (columns {', '.join(COLUMNS)}).")
    return _unique_names(items)


def _csv_rows(text: str, path: Path) -> list[tuple[int, dict | str]]:
    reader = csv.DictReader(text.splitlines())
    fields = [f.strip().lower() for f in reader.fieldnames or []]
    if "source" not in fields:
        raise ManifestError(
            f"Manifest '{path}' has no 'source' column in its header; its first row must name the columns "
            f"({', '.join(COLUMNS)})."
        )
    rows: list[tuple[int, dict | str]] = []
    for num, raw in enumerate(reader, start=2):
        row = {str(k).strip().lower(): (v or "").strip() for k, v in raw.items() if k is not None}
        if any(row.values()):
            rows.append((num, row))
    return rows


def _jsonl_rows(text: str) -> list[tuple[int, dict | str]]:
    rows: list[tuple[int, dict | str]] = []
    for num, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            rows.append((num, f"row {num} is not valid JSON ({exc.msg}); write one JSON object per line"))
            continue
        rows.append((num, row if isinstance(row, dict) else f"row {num} is not a JSON object; write one object per line"))
    return rows


def _item(row: dict | str, where: str, base: Path) -> BatchItem:
    if isinstance(row, str):
        return BatchItem(name=where.replace(" ", "-"), row=where, source="", problem=f"Manifest {row}.")
    source = _text(row.get("source"))
    name = Path(source.rstrip("/")).stem if source else where.replace(" ", "-")
    try:
        if not source:
            raise _RowError("has no source; name a video file or a frame folder")
        prompt = _text(row.get("prompt")) or None
        points = _points(row.get("points"))
        box = _box(row.get("box"))
        if prompt is None and not points and box is None:
            raise _RowError("has no prompt; give a prompt mask, points or a box")
        out = _text(row.get("out")) or None
        return BatchItem(
            name=Path(out).name if out else name,
            row=where,
            source=str(_resolve(source, base)),
            prompt=None if prompt is None else str(_resolve(prompt, base)),
            frame=_int(row.get("frame"), "frame", 0),
            points=points,
            box=box,
            obj_id=_int(row.get("obj_id"), "obj_id", None),
            out=None if out is None else str(_resolve(out, base)),
        )
    except _RowError as exc:
        return BatchItem(name=name, row=where, source=source, problem=f"Manifest {where} {exc}.")


class _RowError(Exception):
    pass


def _text(value: object) -> str:
    return "" if value is None else str(value).strip()


def _resolve(value: str, base: Path) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def _int(value: object, what: str, default: int | None) -> int | None:
    if value is None or _text(value) == "":
        return default
    try:
        number = float(value)  # "3", 3 and "3.0" alike
    except (TypeError, ValueError):
        number = float("nan")
    if not number.is_integer():
        raise _RowError(f"has {what} '{value}', not a whole number")
    if int(number) < 0:
        raise _RowError(f"has a negative {what} ({int(number)})")
    return int(number)


def _numbers(value: object, count: int, what: str, example: str) -> list[float]:
    try:
        numbers = [float(v) for v in (value if isinstance(value, list) else str(value).split(","))]
    except (TypeError, ValueError):
        numbers = []
    if len(numbers) != count:
        raise _RowError(f"has {what} '{value}'; write it like {example}")
    return numbers


def _points(value: object) -> tuple[tuple[float, float, int], ...]:
    if value is None or _text(value) == "":
        return ()
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise _RowError(f"has points '{value}' that are not a JSON list") from None
    parts = value if isinstance(value, list) else [p for p in str(value).split(";") if p.strip()]
    out = []
    for part in parts:
        x, y, label = _numbers(part, 3, "a point", "120,80,1 (label 1 object, 0 background; ';' between points)")
        if label not in (0, 1):
            raise _RowError(f"has a point with label {label:g}; use 1 (object) or 0 (background)")
        out.append((x, y, int(label)))
    return tuple(out)


def _box(value: object) -> tuple[float, float, float, float] | None:
    if value is None or _text(value) == "":
        return None
    x0, y0, x1, y1 = _numbers(value, 4, "a box", "40,30,200,180 (x0,y0,x1,y1)")
    if x1 <= x0 or y1 <= y0:
        raise _RowError(f"has the box '{value}' whose corners are not ordered; write x0,y0,x1,y1 with x1 > x0, y1 > y0")
    return x0, y0, x1, y1


def _unique_names(items: list[BatchItem]) -> list[BatchItem]:
    """A second row with a taken name (and no `out` of its own) fails with a sentence saying so."""
    seen: dict[str, str] = {}
    out = []
    for item in items:
        if item.problem is None and item.name in seen:
            item = BatchItem(name=f"{item.name}@{item.row.replace(' ', '')}", row=item.row, source=item.source,
                             problem=f"Manifest {item.row} names the video '{item.name}' like {seen[item.name]}; give it an 'out' folder of its own.")
        seen.setdefault(item.name, item.row)
        out.append(item)
    return out


def _dataset_items(root: Path) -> list[BatchItem]:
    dirs = dataset_dirs(root)
    if dirs is None:
        raise ManifestError(
            f"Folder '{root}' is not a DAVIS-layout dataset (no JPEGImages/ and Annotations/); pass one, or a CSV or JSON Lines manifest."
        )
    images, annotations = dirs
    items = []
    for seq in sorted(p for p in images.iterdir() if p.is_dir()):
        ann = annotations / seq.name
        problem = None if ann.is_dir() else f"Sequence '{seq.name}' has no Annotations/{seq.name}/ folder; add its first-frame mask."
        items.append(BatchItem(name=seq.name, row=f"sequence {seq.name}", source=str(seq), prompt=str(ann),
                               first_appearance=True, problem=problem))
    if not items:
        raise ManifestError(f"Dataset '{root}' has no sequences under {images}; pass a DAVIS-layout dataset root.")
    return items

"""Training data for `maskvos finetune`: DAVIS-layout sequences, the validation split, targets.

A dataset is `JPEGImages/<seq>/<frame>.jpg` with `Annotations/<seq>/<frame>.png` (palette label maps,
any number of objects). Training clips need a ground-truth mask on every frame they span, so only
frames with an annotation are used (DAVIS and the synthetic domain annotate every frame).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from maskvos.errors import MaskvosError
from maskvos.eval.davis import dataset_dirs
from maskvos.io.frames import IMAGE_SUFFIXES, natural_key
from maskvos.io.masks import VOID_LABEL, read_label_map


class TrainDataError(MaskvosError):
    """A training dataset that cannot be used as it is."""


@dataclass
class TrainSequence:
    """One annotated sequence.

    Attributes:
        name: the sequence's name (its folder).
        frames: image files in frame order.
        annotations: the label-map file of each frame (same order; every frame has one).
        start: index in the folder of `frames[0]` (a held-out tail starts later).
    """

    name: str
    frames: list[Path]
    annotations: list[Path]
    start: int = 0
    _labels: dict[tuple[int, int], np.ndarray] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.frames)

    def labels(self, t: int, resolution: int) -> np.ndarray:
        """(S, S) uint8 label map of frame t at the model's input size (nearest neighbour; void -> 0)."""
        key = (t, resolution)
        if key not in self._labels:
            labels = read_label_map(self.annotations[t])
            labels = np.where(labels == VOID_LABEL, 0, labels).astype(np.uint16)
            img = Image.fromarray(labels.astype(np.int32)).resize((resolution, resolution), Image.NEAREST)
            self._labels[key] = np.asarray(img).astype(np.uint16)
        return self._labels[key]

    def object_ids(self, t: int, resolution: int, min_pixels: int = 1) -> list[int]:
        """Objects with at least `min_pixels` pixels on frame t (at model input size)."""
        ids, counts = np.unique(self.labels(t, resolution), return_counts=True)
        return [int(i) for i, c in zip(ids, counts) if i != 0 and c >= min_pixels]


def read_dataset(root: str | Path) -> list[TrainSequence]:
    """Every sequence of a DAVIS-layout dataset (frames without an annotation are left out)."""
    root = Path(root)
    dirs = dataset_dirs(root)
    if dirs is None:
        raise TrainDataError(f"Dataset '{root}' has no JPEGImages and Annotations folders; pass a DAVIS-layout dataset root.")
    images, annotations = dirs
    sequences = []
    for seq_dir in sorted((p for p in images.iterdir() if p.is_dir()), key=lambda p: natural_key(p.name)):
        ann_dir = annotations / seq_dir.name
        frames = sorted((p for p in seq_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=lambda p: natural_key(p.name))
        pairs = [(f, ann_dir / f"{f.stem}.png") for f in frames]
        pairs = [(f, a) for f, a in pairs if a.is_file()]
        if len(pairs) >= 2:
            sequences.append(TrainSequence(seq_dir.name, [f for f, _ in pairs], [a for _, a in pairs]))
    if not sequences:
        raise TrainDataError(
            f"Dataset '{root}' has no sequence with at least two annotated frames; put label maps in Annotations/<seq>/<frame>.png."
        )
    return sequences


def split_validation(sequences: list[TrainSequence], val: str | None, seed: int = 0) -> tuple[list[TrainSequence], list[TrainSequence]]:
    """(training, validation) sequences.

    Arguments:
        val: comma-separated sequence names; or a fraction ("0.2", default) of the sequences picked at
            random with `seed` (at least one, and at least one left for training); a single sequence is
            split in time instead: its last fraction of frames is held out; "0" validates nothing.
    """
    spec = "0.2" if val is None else val.strip()
    try:
        fraction = float(spec)
    except ValueError:
        fraction = None
    names = {s.name: s for s in sequences}
    if fraction is None:
        wanted = [n.strip() for n in spec.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in names]
        if unknown:
            raise TrainDataError(f"Validation sequence '{unknown[0]}' is not in the dataset; pick from {', '.join(list(names)[:5])} ...")
        held = [names[n] for n in wanted]
        train = [s for s in sequences if s.name not in wanted]
        if not train:
            raise TrainDataError("Every sequence is held out for validation; leave at least one for training.")
        return train, held
    if not 0 <= fraction < 1:
        raise TrainDataError(f"Validation fraction {spec} is not between 0 and 1; give e.g. 0.2 or sequence names.")
    if fraction == 0:
        return list(sequences), []
    if len(sequences) == 1:
        seq = sequences[0]
        cut = len(seq) - max(2, round(len(seq) * fraction))
        if cut < 2:
            raise TrainDataError(f"Sequence '{seq.name}' is too short to hold frames out for validation; add sequences or pass --val 0.")
        head = TrainSequence(seq.name, seq.frames[:cut], seq.annotations[:cut])
        tail = TrainSequence(f"{seq.name}_tail", seq.frames[cut:], seq.annotations[cut:], start=cut)
        return [head], [tail]
    count = min(len(sequences) - 1, max(1, round(len(sequences) * fraction)))
    held_names = set(random.Random(seed).sample(sorted(names), count))
    return [s for s in sequences if s.name not in held_names], [s for s in sequences if s.name in held_names]

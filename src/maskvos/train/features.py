"""The frozen image encoder's features of every training frame, computed once and cached on disk.

Fine-tuning leaves the image encoder (and the decoder's projections of its high-resolution features,
`conv_s0` / `conv_s1`) frozen, so each frame's `FrameFeatures` never change: they are encoded once per
(base model, resolution), stored as float16 per sequence (`<cache>/<fingerprint>-<resolution>/<seq>.pt`)
and read back for every step, which then costs only the trained parts. A cache file records the
frames it was made from (names, sizes, modification times) and is rebuilt when they change.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from maskvos.io.files import atomic_path
from maskvos.model.preprocess import to_model_input
from maskvos.model.sam2 import FrameFeatures, SAM2Model
from maskvos.train.data import TrainSequence

CACHE_VERSION = 1


def _frame_signature(seq: TrainSequence) -> list[tuple[str, int, int]]:
    stats = [(p.name, p.stat()) for p in seq.frames]
    return [(name, st.st_size, int(st.st_mtime)) for name, st in stats]


class FeatureCache:
    """Cached `FrameFeatures` of training sequences (float16 on disk and in memory)."""

    def __init__(self, model: SAM2Model, root: str | Path, resolution: int, fingerprint: str, device: torch.device) -> None:
        self.model = model
        self.root = Path(root) / f"{fingerprint[:16]}-{resolution}"
        self.resolution = resolution
        self.device = device
        self._store: dict[str, dict[str, torch.Tensor]] = {}
        self.frames_encoded = 0

    def _path(self, seq: TrainSequence) -> Path:
        return self.root / f"{seq.name}-{seq.start}.pt"

    def prepare(self, sequences: list[TrainSequence], notify: Callable[[str], None] | None = None) -> None:
        """Load every sequence's features, encoding (and saving) those not cached yet."""
        todo = []
        for seq in sequences:
            stored = self._load(seq)
            if stored is None:
                todo.append(seq)
            else:
                self._store[seq.name] = stored
        total = sum(len(s) for s in todo)
        if todo and notify:
            notify(f"encoding {total} frames of {len(todo)} sequences once with the frozen image encoder (cached in {self.root})")
        done = 0
        for seq in todo:
            self._store[seq.name] = self._encode(seq)
            done += len(seq)
            if notify:
                notify(f"  features: {seq.name} ({done}/{total} frames)")

    def _load(self, seq: TrainSequence) -> dict[str, torch.Tensor] | None:
        path = self._path(seq)
        if not path.is_file():
            return None
        try:
            stored = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a torn or foreign file: encode again
            return None
        if stored.get("version") != CACHE_VERSION or stored.get("signature") != _frame_signature(seq):
            return None
        return stored["tensors"]

    @torch.inference_mode()
    def _encode(self, seq: TrainSequence) -> dict[str, torch.Tensor]:
        parts: dict[str, list[torch.Tensor]] = {"feats": [], "s0": [], "s1": []}
        pos_enc = None
        for path in seq.frames:
            frame = np.asarray(Image.open(path).convert("RGB"))
            feats = self.model.encode_image(to_model_input(frame, self.resolution).to(self.device)[None])
            parts["feats"].append(feats.feats.half().cpu())
            if feats.high_res_feats:
                parts["s0"].append(feats.high_res_feats[0].half().cpu())
                parts["s1"].append(feats.high_res_feats[1].half().cpu())
            pos_enc = feats.pos_enc.cpu()
            self.frames_encoded += 1
        tensors = {k: torch.cat(v) for k, v in parts.items() if v}
        tensors["pos_enc"] = pos_enc
        self.root.mkdir(parents=True, exist_ok=True)
        with atomic_path(self._path(seq)) as tmp:
            torch.save({"version": CACHE_VERSION, "signature": _frame_signature(seq), "tensors": tensors}, tmp)
        return tensors

    def features(self, seq: TrainSequence, frame: int, batch_size: int) -> FrameFeatures:
        """The features of `seq`'s frame `frame` (float32 on the device), expanded to `batch_size` rows."""
        stored = self._store[seq.name]
        high = [stored[k][frame : frame + 1].to(self.device, torch.float32) for k in ("s0", "s1") if k in stored]
        one = FrameFeatures(
            feats=stored["feats"][frame : frame + 1].to(self.device, torch.float32),
            pos_enc=stored["pos_enc"].to(self.device, torch.float32),
            high_res_feats=high,
            image_size=(self.resolution, self.resolution),
        )
        return one.expand(batch_size)

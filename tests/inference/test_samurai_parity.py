"""`samurai` against SAMURAI's own code (`absolutely-not-samurai==1.0.0`, its modified `sam2` package).

That package installs a module named `sam2`, like Meta's reference, so it lives in its own folder
(`scripts/install.sh` puts it in `.oracles/samurai`; `MASKVOS_SAMURAI_ORACLE` points elsewhere) and
runs in a subprocess (`tests/samurai_oracle.py`). Its Kalman filter module imports neither, and is
loaded here by file path for the stage-by-stage check.

The random-weight checkpoint (`parity_tools.samurai_checkpoint`) is shaped so that SAMURAI's rule
has something to decide: the object is present, the video has a plain background so that the
candidates are compact masks with different boxes, and the IoU head is scaled and shifted so that
two candidates' predicted IoUs cross each other and straddle the memory threshold 0.5.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from maskvos.checkpoints import load_model
from maskvos.inference.config import InferenceConfig
from maskvos.inference.policies import SamuraiPolicy, motion
from maskvos.inference.session import VideoSession
from maskvos.model.config import get_config

from parity_tools import assert_masks_match, disk_video, max_abs_diff, samurai_checkpoint

REPO = Path(__file__).resolve().parents[2]
ORACLE_DIR = Path(os.environ.get("MASKVOS_SAMURAI_ORACLE", REPO / ".oracles" / "samurai"))
ORACLE_SCRIPT = REPO / "tests" / "samurai_oracle.py"
KALMAN_FILE = ORACLE_DIR / "sam2" / "utils" / "kalman_filter.py"
pytestmark = pytest.mark.skipif(
    not KALMAN_FILE.exists(),
    reason=f"SAMURAI's code is not installed in {ORACLE_DIR}: run scripts/install.sh "
    "(pip install --no-deps --target .oracles/samurai absolutely-not-samurai==1.0.0)",
)

SIZE = 256
NUM_FRAMES = 24
STATS: dict[str, float] = {}


def run_ours(path: Path, frames: Path, mask: np.ndarray, policy) -> tuple[VideoSession, dict]:
    model = load_model(path, config=dataclasses.replace(get_config("sam2.1-tiny"), image_size=SIZE))
    session = VideoSession(model, frames, InferenceConfig(memory_policy=policy))
    session.add_mask(0, 1, mask)
    return session, {r.frame_idx: r for r in session.propagate()}


@dataclasses.dataclass(frozen=True)
class LoggingSamurai(SamuraiPolicy):
    """SAMURAI's policy, recording the candidates' IoUs it chose among and its choice."""

    log: list = dataclasses.field(default_factory=list, compare=False, repr=False)

    def choose_mask(self, candidates, state):
        choice = super().choose_mask(candidates, state)
        self.log.append((candidates.ious, choice.index))
        return choice


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The video, its first mask and the shaped checkpoint."""
    root = tmp_path_factory.mktemp("samurai")
    masks = disk_video(root / "frames", NUM_FRAMES)
    np.save(root / "mask.npy", masks[0])
    return root, samurai_checkpoint(root / "samurai.pt", root / "frames", masks[0], SIZE), masks


def run_oracle(root: Path, path: Path, stable_frames: int | None, tag: str) -> dict:
    out = root / f"oracle-{tag}.pt"
    cmd = [sys.executable, str(ORACLE_SCRIPT), str(ORACLE_DIR), str(path), str(root / "frames"), str(root / "mask.npy")]
    cmd += [str(out), "--size", str(SIZE), "--model", "t"]
    if stable_frames is not None:
        cmd += ["--stable-frames", str(stable_frames)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return torch.load(out, weights_only=False)


def test_kalman_filter_equals_the_reference():
    spec = importlib.util.spec_from_file_location("samurai_kalman_filter", KALMAN_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ref = module.KalmanFilter()
    rng = np.random.default_rng(0)
    box = [40.0, 30.0, 90.0, 110.0]
    mean, cov = ref.initiate(ref.xyxy_to_xyah(box))
    ours = motion.initiate(box)
    worst = 0.0
    for _ in range(30):
        np.testing.assert_allclose(ours.mean, mean, rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(ours.covariance, cov, rtol=1e-12, atol=1e-9)
        mean, cov = ref.predict(mean, cov)
        ours = motion.predict(ours)
        np.testing.assert_allclose(ours.mean, mean, rtol=1e-12, atol=1e-9)
        candidates = [[v + rng.normal(0, 6) for v in box] for _ in range(3)] + [[0, 0, 0, 0]]
        expected = ref.compute_iou(mean[:4], candidates)
        got = [motion.box_iou(ours.box(), None if c == [0, 0, 0, 0] else tuple(c)) for c in candidates]
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
        assert expected[-1] == 0 and max(expected) > 0.3, "the IoUs compared must be non-trivial"
        box = [v + d for v, d in zip(box, (3.0, 2.0, 3.5, 2.0))]
        observed = [v + rng.normal(0, 2) for v in box]
        mean, cov = ref.update(mean, cov, ref.xyxy_to_xyah(observed))
        ours = motion.update(ours, observed)
        worst = max(worst, float(np.abs(ours.mean - mean).max()))
    assert abs(mean[4]) > 1.0, "the filter should have learnt the box's velocity"
    STATS["kalman mean max |d|"] = worst


@pytest.mark.parametrize(
    "stable_frames", [pytest.param(None, id="authors-config"), pytest.param(8, id="stable-after-8")]
)
def test_samurai_equals_the_reference(setup, stable_frames):
    root, path, masks = setup
    tag = "default" if stable_frames is None else f"stable{stable_frames}"
    ref = run_oracle(root, path, stable_frames, tag)
    policy = LoggingSamurai() if stable_frames is None else LoggingSamurai(stable_frames=stable_frames)
    session, ours = run_ours(path, root / "frames", masks[0], policy)
    assert len(policy.log) == NUM_FRAMES - 1, "one choice per tracked frame"
    assert sorted(ref) == sorted(ours) == list(range(NUM_FRAMES))
    worst, overridden, nontrivial, low_iou, high_iou = 0.0, 0, 0, 0, 0
    per_frame = []
    for t in range(1, NUM_FRAMES):
        r, entry = ref[t], session.bank.objects[1].tracked[t]
        diff = assert_masks_match(ours[t].mask_logits[0:1], r["video_res_logits"], f"samurai frame {t}")
        worst = max(worst, diff)
        per_frame.append(diff)
        assert max_abs_diff(entry.low_res_logits, r["low_res_logits"]) <= 1e-3
        assert max_abs_diff(entry.obj_ptr, r["obj_ptr"]) <= 1e-3
        a, b = entry.mem_feats.float(), r["mem_feats"]
        assert ((a - b).abs() - (1e-3 + b.abs() * 2**-7)).max().item() <= 0, f"memory features differ on frame {t}"
        choice = int(np.argmax(np.asarray(r["ious"], dtype=np.float32)))
        ours_choice = policy.log[t - 1][1]
        np.testing.assert_allclose(policy.log[t - 1][0], r["ious"], atol=1e-4)
        assert r["chosen"] in (0, 1, 2)
        assert abs(entry.signals.iou - r["iou"]) <= 1e-4, f"frame {t}: chosen IoU {entry.signals.iou} vs {r['iou']}"
        assert ours_choice == r["chosen"], f"frame {t}: we chose candidate {ours_choice}, SAMURAI {r['chosen']}"
        assert (entry.signals.motion is None) == (r["motion"] is None), f"frame {t}: motion score present in one only"
        if r["motion"] is not None:
            assert abs(entry.signals.motion - r["motion"]) <= 1e-4
        overridden += r["chosen"] != choice
        fg = float((r["video_res_logits"] > 0).float().mean())
        nontrivial += 0.001 < fg < 0.999
        low_iou += r["iou"] <= 0.5
        high_iou += r["iou"] > 0.5
    stable_after = 15 if stable_frames is None else stable_frames
    motion_frames = sum(ref[t]["motion"] is not None for t in range(1, NUM_FRAMES))
    assert motion_frames >= NUM_FRAMES - 1 - stable_after, f"the filter was stable on only {motion_frames} frames"
    assert nontrivial >= NUM_FRAMES - 1, "masks must be neither empty nor full"
    assert low_iou and high_iou, f"IoUs must straddle the memory threshold ({low_iou} low, {high_iou} high)"
    if stable_frames is not None:
        assert overridden >= 1, "the motion term never changed the choice: the test proves too little"
    # The policy matters: SAM2's own rule gives other masks on this video.
    _, plain = run_ours(path, root / "frames", masks[0], "sam2")
    assert max(max_abs_diff(plain[t].mask_logits, ours[t].mask_logits) for t in ours) > 0.05
    STATS[f"{tag} max |dlogit|"] = worst
    STATS[f"{tag} frames where motion overrode the IoU choice"] = overridden
    print(f"\n[samurai {tag}] max |dlogit| per frame: " + " ".join(f"{d:.1e}" for d in per_frame))
    print(f"[samurai {tag}] chosen candidate identical on {NUM_FRAMES - 1} frames; motion overrode IoU on {overridden}")

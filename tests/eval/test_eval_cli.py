"""`maskvos eval` and `maskvos eval-run` on a small synthetic DAVIS-layout dataset (featmatch backend)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from maskvos.cli import main
from maskvos.eval import EvalReport
from maskvos.io.masks import write_label_map

from media_tools import occlusion_video


def _dataset(root, sequences=("alpha", "beta"), n=6):
    frames, truths = occlusion_video(n)
    for k, name in enumerate(sequences):
        (root / "JPEGImages" / name).mkdir(parents=True)
        (root / "Annotations" / name).mkdir(parents=True)
        for t in range(n):
            Image.fromarray(np.roll(frames[t], 8 * k, axis=1)).save(root / "JPEGImages" / name / f"{t:05d}.jpg", quality=95)
            labels = np.zeros(frames[t].shape[:2], np.uint8)
            for obj_id, mask in truths[t].items():
                if name == "beta" and obj_id == 2 and t < 2:
                    continue  # object 2 of "beta" first appears on frame 2
                labels[np.roll(mask, 8 * k, axis=1)] = obj_id
            write_label_map(root / "Annotations" / name / f"{t:05d}.png", labels)
    return root


def test_eval_run_then_eval_gives_the_same_table(tmp_path, capsys):
    data = _dataset(tmp_path / "data")
    out = tmp_path / "pred"
    assert main(["eval-run", str(data), "--model", "featmatch", "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "frames/s end to end" in printed.out and "alpha" in printed.out and "beta" in printed.out
    report = EvalReport.read_csv(out / "results.csv")
    assert report.summary.jf_mean > 0.6, report.table()
    assert sorted(p.name for p in (out / "beta").glob("*.png")) == [f"{t:05d}.png" for t in range(6)]
    # Object 2 of "beta" was prompted on its first annotated frame (2), not on frame 0.
    first = np.asarray(Image.open(out / "beta" / "00002.png"))
    assert (first == 2).any() and not (np.asarray(Image.open(out / "beta" / "00000.png")) == 2).any()
    # Resuming a finished run segments nothing again.
    assert main(["eval-run", str(data), "--model", "featmatch", "--out", str(out)]) == 0
    assert "already complete" in capsys.readouterr().err
    # `maskvos eval` on the same predictions gives the same numbers.
    assert main(["eval", "--gt", str(data), "--pred", str(out), "--out", str(tmp_path / "again.csv")]) == 0
    again = EvalReport.read_csv(tmp_path / "again.csv")
    assert abs(again.summary.jf_mean - report.summary.jf_mean) < 1e-12


def test_eval_bad_inputs(tmp_path, capsys):
    data = _dataset(tmp_path / "data", sequences=("alpha",), n=4)
    code = main(["eval", "--gt", str(data), "--pred", str(tmp_path / "nothing")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("maskvos: error: ") and "Traceback" not in err
    code = main(["eval-run", str(data), "--model", "featmatch", "--out", str(tmp_path / "p"), "--sequences", "nope"])
    assert code == 2 and "Sequence 'nope' is not in" in capsys.readouterr().err


def test_stress_then_eval_run_with_policy_smoothing_and_stability(tmp_path, capsys):
    """What a user runs: `maskvos stress`, a run of the stress set with the confident policy and
    temporal smoothing (the library call `eval-run` makes, at a small working size to stay fast),
    then `maskvos eval --stability` on the predictions."""
    import json
    import sys
    from pathlib import Path

    from maskvos.backends.featmatch import FeatMatchConfig, FeatMatchModel
    from maskvos.eval.run import run_dataset
    from maskvos.inference.config import InferenceConfig
    from maskvos.inference.temporal import temporal_chain

    sys.path.insert(0, str(Path(__file__).parent))
    from test_stress import make_dataset

    data = make_dataset(tmp_path / "data", {"alpha": 22, "beta": 22})
    stress = tmp_path / "stress"
    assert main(["stress", str(data), "--out", str(stress), "--occlusion", "5", "--distractor", "--seed", "3",
                 "--sequences", "alpha"]) == 0
    out = capsys.readouterr().out
    assert "stress set in" in out and "1 occlusion" in out and "1 distractor" in out and "1 plain" in out
    index = json.loads((stress / "stress.json").read_text())
    assert index["seed"] == 3 and index["occlusion"] == [5] and set(index["sequences"]) == {"alpha", "alpha_occ5", "alpha_dis"}
    pred = tmp_path / "pred"
    model = FeatMatchModel(FeatMatchConfig(scale=2.0))
    run = run_dataset(stress, model, pred, config=InferenceConfig(memory_policy="confident"),
                      postprocessors=lambda: temporal_chain(max_hole_area=4))
    assert run.frames == 3 * 22
    assert main(["eval", "--gt", str(stress), "--pred", str(pred), "--stability"]) == 0
    printed = capsys.readouterr().out
    assert "occ5" in printed and "distractor" in printed and "flicker" in printed.lower()
    # The tracking options are refused in one sentence before any work.
    assert main(["eval-run", str(stress), "--model", "featmatch", "--out", str(tmp_path / "p2"),
                 "--temporal-smoothing", "k=x"]) == 2
    err = capsys.readouterr().err
    assert "needs a whole number" in err and "Traceback" not in err and not (tmp_path / "p2").exists()
    assert main(["eval-run", str(stress), "--model", "featmatch", "--out", str(tmp_path / "p3"), "--resolution", "512"]) == 2
    assert "does not use --resolution" in capsys.readouterr().err

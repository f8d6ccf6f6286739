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

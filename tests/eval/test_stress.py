"""Stress sets (occlusion, distractor) built from small synthetic DAVIS-layout datasets in tmp_path."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maskvos.eval.metrics import EvalError
from maskvos.eval.stress import SLIDE, StressManifest, build_stress_sets, read_manifest

H, W = 48, 64
SIDE = 10  # the object: a SIDE x SIDE square


def square_x(index: int, phase: float) -> int:
    """Left edge of the moving square on a frame (moves back and forth, inside the frame)."""
    return 22 + round(16 * math.sin(index / 5 + phase))


def make_dataset(
    root: Path,
    lengths: dict[str, int],
    ext: str = ".png",
    palette: list[int] | None = None,
    appear: dict[str, int] | None = None,
    second_from: int = 0,
    pulse: bool = False,
) -> Path:
    """A DAVIS-layout dataset: random-texture backgrounds that shift each frame, a moving square.

    Binary (0/255 grey) masks, or with `palette` palette masks with two objects (the square = 1,
    another square = 2, from frame `second_from` on) and a void (255) ring around each object.
    appear: {sequence: first frame where the object is visible} (empty masks before it).
    pulse: the object is a 4 x 4 square that grows to 30 x 30 on every 8th frame, so that the
    occluder (as large as the largest box it covers) is much larger than most boxes.
    """
    rng = np.random.default_rng(7)
    appear = appear or {}
    for k, (name, n) in enumerate(lengths.items()):
        (root / "JPEGImages" / name).mkdir(parents=True)
        (root / "Annotations" / name).mkdir(parents=True)
        background = rng.integers(0, 256, (H, W + 64, 3), dtype=np.uint8)
        colour = rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
        for i in range(n):
            img = background[:, i % 64 : i % 64 + W].copy()
            labels = np.zeros((H, W), dtype=np.uint8)
            if pulse:
                side = 30 if i % 8 == 0 else 4
                x, y = 32 + round(8 * math.sin(i / 4)) - side // 2, 24 - side // 2
                img[y : y + side, x : x + side] = colour[0, 0]
                labels[y : y + side, x : x + side] = 1
            elif i >= appear.get(name, 0):
                x, y = square_x(i, k), 10 + (i % 7)
                img[y : y + SIDE, x : x + SIDE] = colour
                labels[y : y + SIDE, x : x + SIDE] = 1
                if palette is not None:
                    ring = np.zeros_like(labels, dtype=bool)
                    ring[y - 1 : y + SIDE + 1, x - 1 : x + SIDE + 1] = True
                    labels[ring & (labels == 0)] = 255
            if palette is not None and i >= second_from:
                x2, y2 = 50 - (i % 9), 36
                img[y2 : y2 + 6, x2 : x2 + 6] = (250, 250, 0)
                labels[y2 - 1 : y2 + 7, x2 - 1 : x2 + 7] = 255
                labels[y2 : y2 + 6, x2 : x2 + 6] = 2
            stem = f"{i:05d}"
            Image.fromarray(img).save(root / "JPEGImages" / name / f"{stem}{ext}")
            if palette is None:
                Image.fromarray(np.where(labels > 0, 255, 0).astype(np.uint8), mode="L").save(
                    root / "Annotations" / name / f"{stem}.png"
                )
            else:
                mask = Image.fromarray(labels, mode="P")
                mask.putpalette(palette)
                mask.save(root / "Annotations" / name / f"{stem}.png")
    return root


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def rgb(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def labels_of(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        arr = np.asarray(img)
        return arr.copy() if img.mode == "P" else (arr > 0).astype(np.uint8)


def enlarged(mask: np.ndarray) -> tuple[int, int, int, int]:
    """The ground-truth box with each side moved out by 5 % of the box's width / height."""
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    mx, my = 0.05 * (x1 - x0), 0.05 * (y1 - y0)
    return (
        max(0, math.floor(x0 - mx)), max(0, math.floor(y0 - my)), min(W, math.ceil(x1 + mx)), min(H, math.ceil(y1 + my))
    )  # fmt: skip


def rect_mask(box: tuple[int, int, int, int]) -> np.ndarray:
    out = np.zeros((H, W), dtype=bool)
    out[box[1] : box[3], box[0] : box[2]] = True
    return out


def dilate(mask: np.ndarray, r: int) -> np.ndarray:
    padded = np.pad(mask, r)
    out = np.zeros_like(mask)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            out |= padded[dy : dy + H, dx : dx + W]
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, StressManifest]:
    """alpha (64 frames, object from frame 2), beta (64), gamma (35): PNG frames, L = 5, 15, 40, distractor."""
    base = tmp_path_factory.mktemp("stress")
    src = make_dataset(base / "src", {"alpha": 64, "beta": 64, "gamma": 35}, appear={"alpha": 2})
    out = base / "out"
    calls = []
    manifest = build_stress_sets(
        src, out, occlusion=(5, 15, 40), distractor=True, seed=3, progress=lambda *a: calls.append(a)
    )
    assert [c[1] for c in calls] == list(range(1, len(manifest.sequences) + 1))
    assert {c[2] for c in calls} == {len(manifest.sequences)}
    assert [c[0] for c in calls] == list(manifest.sequences)
    return src, out, manifest


def check_occlusion(src: Path, out: Path, entry) -> None:
    """The occluder covers the target's enlarged box on exactly the L `covered` frames, the image
    changes only under it (where it shows its texture), the ground truth is background under it and
    unchanged elsewhere, `hidden` and `reappear` say what the edited ground truth shows."""
    seq, obj = entry.source_sequence, entry.obj_id
    assert obj == 1
    occ = entry.occluder_from
    assert occ.sequence != seq and not occ.same_sequence
    x0, y0, x1, y1 = occ.box
    patch = rgb(src / "JPEGImages" / occ.sequence / f"{occ.frame}.png")[y0:y1, x0:x1]
    ph, pw = patch.shape[:2]
    stems = sorted(p.stem for p in (src / "JPEGImages" / seq).iterdir())
    covering, hidden, edited_frames = [], [], 0
    for stem in stems:
        src_img = rgb(src / "JPEGImages" / seq / f"{stem}.png")
        out_img = rgb(out / "JPEGImages" / entry.name / f"{stem}.png")
        src_lab = labels_of(src / "Annotations" / seq / f"{stem}.png")
        out_lab = labels_of(out / "Annotations" / entry.name / f"{stem}.png")
        rect = entry.occluder_boxes.get(stem)
        inside = np.zeros((H, W), bool) if rect is None else rect_mask(rect)
        # The image changes only under the occluder, and there it shows the occluder's texture.
        assert not np.any((src_img != out_img).any(axis=2) & ~inside), (entry.name, stem)
        if rect is not None:
            rx0, ry0, rx1, ry1 = rect
            assert ry1 - ry0 == ph
            visible = patch if rx1 - rx0 == pw else patch[:, pw - (rx1 - rx0) :] if rx0 == 0 else patch[:, : rx1 - rx0]
            assert np.array_equal(out_img[ry0:ry1, rx0:rx1], visible), (entry.name, stem)
            edited_frames += 1
        # Ground truth: background under the occluder, unchanged elsewhere.
        assert np.array_equal(out_lab, np.where(inside, 0, src_lab)), (entry.name, stem)
        if (src_lab == obj).any() and rect is not None and (rect_mask(enlarged(src_lab == obj)) <= inside).all():
            covering.append(stem)
        if (src_lab == obj).any() and not (out_lab == obj).any():
            hidden.append(stem)
    assert covering == list(entry.covered)
    assert len(covering) == entry.length
    first = stems.index(covering[0])
    assert covering == stems[first : first + entry.length]  # consecutive
    assert edited_frames > entry.length  # it also slides in and out
    assert list(entry.hidden) == hidden and set(covering) <= set(hidden)
    prompt = stems.index(entry.prompt)
    assert first >= prompt + 1 + SLIDE and len(stems) - (first + entry.length) >= 10
    later = [
        s
        for s in stems[first + entry.length :]
        if (labels_of(out / "Annotations" / entry.name / f"{s}.png") == obj).any()
    ]
    assert entry.reappear == later[0]


def test_occluder_covers_the_enlarged_box_on_exactly_l_frames(built):
    src, out, manifest = built
    occlusions = [s for s in manifest.sequences.values() if s.kind == "occlusion"]
    assert sorted(s.name for s in occlusions) == [
        "alpha_occ15", "alpha_occ40", "alpha_occ5", "beta_occ15", "beta_occ40", "beta_occ5", "gamma_occ15", "gamma_occ5"
    ]  # fmt: skip
    for entry in occlusions:
        check_occlusion(src, out, entry)


def test_slide_frames_never_cover_the_whole_box(tmp_path):
    # The occluder is sized for the 30 x 30 frames it covers; on the slide frames next to the covered
    # span the object is a 4 x 4 square that an occluder passing by would cover whole.
    src = make_dataset(tmp_path / "src", {"a": 64, "b": 64}, pulse=True)
    for seed in range(3):
        out = tmp_path / f"out{seed}"
        manifest = build_stress_sets(src, out, occlusion=(15,), seed=seed, include_plain=False)
        for entry in manifest.sequences.values():
            assert entry.occluder_from.box[2] - entry.occluder_from.box[0] >= 30
            check_occlusion(src, out, entry)


def test_prompt_frame_earlier_frames_and_plain_copy_are_byte_identical(built):
    src, out, manifest = built
    assert manifest.sequences["alpha"].prompt == "00002"  # the object is visible from frame 2
    for name in ("alpha", "beta", "gamma"):
        for sub in ("JPEGImages", "Annotations"):
            assert tree(out / sub / name) == tree(src / sub / name)
    for entry in manifest.sequences.values():
        seq = entry.source_sequence
        prompt = int(entry.prompt)
        for i in range(prompt + 1):
            stem = f"{i:05d}"
            for sub, ext in (("JPEGImages", ".png"), ("Annotations", ".png")):
                assert (out / sub / entry.name / f"{stem}{ext}").read_bytes() == (
                    src / sub / seq / f"{stem}{ext}"
                ).read_bytes()
        altered = [*entry.occluder_boxes, *entry.pasted]
        assert (entry.kind == "plain") == (not altered)
        assert all(int(s) > prompt for s in altered)
        assert sorted(p.name for p in (out / "JPEGImages" / entry.name).iterdir()) == sorted(
            p.name for p in (src / "JPEGImages" / seq).iterdir()
        )


def test_too_short_sequence_is_skipped_with_a_reason(built):
    _, out, manifest = built
    skipped = [s for s in manifest.skipped if s.sequence == "gamma"]
    assert [(s.kind, s.length) for s in skipped] == [("occlusion", 40)]
    assert "35 frames" in skipped[0].reason and "56" in skipped[0].reason
    assert not (out / "JPEGImages" / "gamma_occ40").exists()
    assert "gamma_occ15" in manifest.sequences  # 35 >= 1 + 5 + 15 + 10
    assert read_manifest(out) == manifest
    assert not (out / ".stress-build").exists()


def test_distractor_keeps_off_the_objects_and_leaves_gt_unchanged(built):
    src, out, manifest = built
    entries = [s for s in manifest.sequences.values() if s.kind == "distractor"]
    assert sorted(s.name for s in entries) == ["alpha_dis", "beta_dis", "gamma_dis"]
    for entry in entries:
        seq = entry.source_sequence
        stems = sorted(p.stem for p in (src / "JPEGImages" / seq).iterdir())
        assert tree(out / "Annotations" / entry.name) == tree(src / "Annotations" / seq)
        assert entry.masks == f"Distractors/{entry.name}"
        assert sorted(p.stem for p in (out / entry.masks).iterdir()) == list(entry.pasted)
        after = stems[stems.index(entry.prompt) + 1 :]
        assert sorted(entry.pasted + entry.not_pasted) == after
        assert len(entry.pasted) >= len(after) // 2
        assert int(entry.copy_from) - int(entry.prompt) >= 10
        cx0, cy0, cx1, cy1 = entry.copy_box
        copy_img = rgb(src / "JPEGImages" / seq / f"{entry.copy_from}.png")[cy0:cy1, cx0:cx1]
        copy_mask = labels_of(src / "Annotations" / seq / f"{entry.copy_from}.png")[cy0:cy1, cx0:cx1] == entry.obj_id
        positions = set()
        for stem in stems:
            src_img = rgb(src / "JPEGImages" / seq / f"{stem}.png")
            out_img = rgb(out / "JPEGImages" / entry.name / f"{stem}.png")
            changed = (src_img != out_img).any(axis=2)
            if stem not in entry.pasted:
                assert not changed.any()
                continue
            with Image.open(out / entry.masks / f"{stem}.png") as img:
                assert img.mode == "L"
                dis = np.asarray(img)
            assert set(np.unique(dis)) == {0, 255}
            dis = dis > 0
            gt = labels_of(src / "Annotations" / seq / f"{stem}.png")
            assert not np.any(dis & dilate(gt != 0, 2)), (entry.name, stem)
            assert not np.any(changed & ~dis)
            ys, xs = np.nonzero(dis)
            x, y = xs.min(), ys.min()
            assert entry.scale == 1.0
            assert np.array_equal(dis[y : y + cy1 - cy0, x : x + cx1 - cx0], copy_mask)
            assert np.array_equal(out_img[y : y + cy1 - cy0, x : x + cx1 - cx0][copy_mask], copy_img[copy_mask])
            positions.add((int(x), int(y)))
        assert len(positions) > 5  # it moves


def test_same_seed_gives_identical_trees_and_another_seed_differs(tmp_path):
    src = make_dataset(tmp_path / "src", {"a": 60, "b": 60}, ext=".jpg")
    trees = []
    for seed, name in ((0, "one"), (0, "two"), (1, "three")):
        build_stress_sets(src, tmp_path / name, occlusion=(5,), distractor=True, seed=seed)
        trees.append(tree(tmp_path / name))
    assert trees[0] == trees[1]
    assert trees[0].keys() != trees[2].keys() or trees[0] != trees[2]
    differing = [k for k in trees[0] if trees[0][k] != trees[2].get(k)]
    assert "stress.json" in differing and any(k.startswith("JPEGImages/a_occ5/") for k in differing)
    # JPEG sources: altered frames are JPEG files under the source stems, unaltered ones byte copies.
    assert sorted(k for k in trees[0] if k.startswith("JPEGImages/a_occ5/")) == sorted(
        f"JPEGImages/a_occ5/{p.name}" for p in (src / "JPEGImages" / "a").iterdir()
    )
    entry = read_manifest(tmp_path / "one").sequences["a_occ5"]
    altered = next(iter(entry.occluder_boxes))
    with Image.open(tmp_path / "one" / "JPEGImages" / "a_occ5" / f"{altered}.jpg") as img:
        assert img.format == "JPEG"


def test_palette_source_keeps_its_palette_and_ids(tmp_path):
    palette = [int(v) for v in np.random.default_rng(5).integers(0, 256, 768)]
    src = make_dataset(tmp_path / "src", {"p": 64, "q": 64}, palette=palette, second_from=3)
    manifest = build_stress_sets(src, tmp_path / "out", occlusion=(15,), distractor=True, include_plain=False)
    assert sorted(manifest.sequences) == ["p_dis", "p_occ15", "q_dis", "q_occ15"]
    voided = 0
    for entry in manifest.sequences.values():
        assert entry.obj_id == 1  # object 2 is absent on the prompt frame
        for path in sorted((tmp_path / "out" / "Annotations" / entry.name).iterdir()):
            source = src / "Annotations" / entry.source_sequence / path.name
            with Image.open(path) as img, Image.open(source) as ref:
                assert img.mode == "P" and img.getpalette() == ref.getpalette()
                out_lab, src_lab = np.asarray(img), np.asarray(ref)
            assert set(np.unique(out_lab)) <= set(np.unique(src_lab))
            rect = entry.occluder_boxes.get(path.stem)
            inside = np.zeros((H, W), bool) if rect is None else rect_mask(rect)
            assert np.array_equal(out_lab, np.where(inside, 0, src_lab))
            voided += int(np.count_nonzero(inside & (src_lab == 255)))
        if entry.kind == "distractor":
            for stem in entry.pasted:
                dis = np.asarray(Image.open(tmp_path / "out" / entry.masks / f"{stem}.png")) > 0
                gt = np.asarray(Image.open(src / "Annotations" / entry.source_sequence / f"{stem}.png"))
                assert not np.any(dis & (gt != 0))  # neither object, nor void
    assert voided > 0  # void pixels under the occluder became background


def test_one_sequence_dataset_takes_the_occluder_from_a_far_frame(tmp_path):
    src = make_dataset(tmp_path / "src", {"solo": 70})
    manifest = build_stress_sets(src, tmp_path / "out", occlusion=(5,), include_plain=False)
    entry = manifest.sequences["solo_occ5"]
    assert entry.occluder_from.sequence == "solo" and entry.occluder_from.same_sequence
    first, last = int(entry.covered[0]), int(entry.covered[-1])
    frame = int(entry.occluder_from.frame)
    assert frame <= first - 10 or frame >= last + 10


def test_interrupted_build_resumes_to_the_same_tree(tmp_path):
    src = make_dataset(tmp_path / "src", {"a": 60, "b": 60})
    kwargs = dict(occlusion=(5, 15), distractor=True, seed=2)
    build_stress_sets(src, tmp_path / "whole", **kwargs)

    def stop(name: str, done: int, total: int) -> None:
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_stress_sets(src, tmp_path / "cut", progress=stop, **kwargs)
    assert read_manifest(tmp_path / "cut") is None  # not complete
    with pytest.raises(EvalError, match="is not empty"):
        build_stress_sets(src, tmp_path / "cut", occlusion=(5,), distractor=True, seed=2)
    seen = []
    build_stress_sets(src, tmp_path / "cut", progress=lambda *a: seen.append(a), **kwargs)
    assert [a[1] for a in seen] == list(range(1, 9))
    assert tree(tmp_path / "cut") == tree(tmp_path / "whole")


def test_finished_out_dir_is_returned_and_other_arguments_refused(tmp_path):
    src = make_dataset(tmp_path / "src", {"a": 40, "b": 40})
    out = tmp_path / "out"
    manifest = build_stress_sets(src, out, occlusion=(5,))
    stamp = (out / "stress.json").stat().st_mtime_ns
    assert build_stress_sets(src, out, occlusion=(5,)) == manifest
    assert (out / "stress.json").stat().st_mtime_ns == stamp
    with pytest.raises(EvalError, match=r"other arguments \(seed differ\)"):
        build_stress_sets(src, out, occlusion=(5,), seed=1)
    assert read_manifest(tmp_path) is None


def test_bad_inputs_are_refused_in_one_sentence(tmp_path):
    src = make_dataset(tmp_path / "src", {"a": 40})
    with pytest.raises(EvalError, match="has no JPEGImages folder; pass the root of a DAVIS-layout dataset"):
        build_stress_sets(tmp_path / "src" / "Annotations", tmp_path / "o1")
    (tmp_path / "bare" / "JPEGImages" / "a").mkdir(parents=True)
    with pytest.raises(EvalError, match="has no Annotations folder"):
        build_stress_sets(tmp_path / "bare", tmp_path / "o2")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(EvalError, match="is not empty and holds no stress set built with these arguments"):
        build_stress_sets(src, busy)
    assert sorted(p.name for p in busy.iterdir()) == ["notes.txt"]  # nothing written into it
    with pytest.raises(EvalError, match=r"Sequence\(s\) \['nope'\] are not in the dataset"):
        build_stress_sets(src, tmp_path / "o3", sequences=["nope"])
    with pytest.raises(EvalError, match="Occlusion length 0 is not a positive whole number"):
        build_stress_sets(src, tmp_path / "o4", occlusion=(0,))
    with pytest.raises(EvalError, match="repeat a value"):
        build_stress_sets(src, tmp_path / "o5", occlusion=(5, 5))

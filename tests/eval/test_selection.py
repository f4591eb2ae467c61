"""What a user reads to pick a model: contamination, the report, the leaderboard and its weighted
matrix, measured speed, and the family tree, on a registry built here."""

from __future__ import annotations

import json

import pytest

from lmstack import registry
from lmstack.errors import LmstackError
from lmstack.eval.contamination import contamination
from lmstack.eval.leaderboard import leaderboard, parse_weights
from lmstack.eval.report import write_report
from lmstack.eval.task import SHIPPED_TASKS, load_task
from lmstack.registry.tree import family, render_png, render_text


def test_contamination_flags_exactly_the_documents_the_training_data_contains(tmp_path):
    task = load_task(SHIPPED_TASKS / "lmstack_rewrite.yaml")
    leaked = [task.docs[i] for i in (3, 7)]
    records = [{"messages": [{"role": "user", "content": f"Sentence: {d['sentence']}"},
                             {"role": "assistant", "content": d["past"]}]} for d in leaked]
    records.append({"text": " ".join(["Nothing in this filler is about the past tense of anything at all."] * 4)})
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    [result] = contamination([task], str(tmp_path / "train.jsonl"), n=8)
    assert (result.documents, result.contaminated, result.examples, result.too_short) == (60, 2, [3, 7], 0)
    [short] = contamination([task], str(tmp_path / "train.jsonl"), n=30)  # longer than every document
    assert short.too_short == 60 and short.rate == 0.0


def record_family(tmp_path):
    """base (pulled) -> sft (fine-tune) -> q8 (quantized); base + sft -> merged."""
    paths = {name: tmp_path / name for name in ("base", "sft", "q8", "merged")}
    for name, path in paths.items():
        path.mkdir()
        (path / "model.safetensors").write_bytes(b"x" * {"base": 4000, "sft": 4000, "q8": 1000, "merged": 4000}[name])
    base = registry.record("model", paths["base"], name="base", operation="pull")
    sft = registry.record("model", paths["sft"], name="sft", operation="sft", parents=[base])
    q8 = registry.record("model", paths["q8"], name="q8", operation="quantize", parents=[sft])
    merged = registry.record("model", paths["merged"], name="merged", operation="merge", parents=[base, sft])
    scores = {base: (0.40, 10.0), sft: (0.60, 10.0), q8: (0.55, 30.0), merged: (0.50, None)}
    for artifact, (acc, speed) in scores.items():
        registry.add_score(artifact, "lmstack_mc/acc", acc, dataset="lmstack:task/lmstack_mc",
                           details={"stderr": 0.05, "samples": 100})
        if speed is not None:
            registry.add_score(artifact, "speed/decode_tokens_per_second", speed)
    registry.add_score(sft, "judge/win_rate", 0.7, details={"settings": {"opponent": base}})
    return base, sft, q8, merged


def test_report_shows_scores_deltas_against_the_parent_and_verdicts(tmp_path):
    base, sft, q8, _ = record_family(tmp_path)
    folder = write_report([sft, q8], tmp_path / "report")
    text = (folder / "report.md").read_text()
    assert "| lmstack_mc/acc | 0.6 | 0.05 | 100 | +0.2 | base (" in text  # sft against its parent
    assert "| lmstack_mc/acc | 0.55 | 0.05 | 100 | -0.05 | sft (" in text  # q8 against sft
    assert "Judge verdicts" in text and "judge/win_rate | 0.7" in text
    page = (folder / "report.html").read_text()
    assert 'src="data:image/png;base64,' in page and "http" not in page.replace('charset="utf-8"', "")
    assert (folder / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(LmstackError, match="folder is not empty"):
        write_report([sft], tmp_path / "report")
    with pytest.raises(LmstackError, match="not in the registry yet"):
        write_report([str(tmp_path)], tmp_path / "other")


def test_weighted_matrix_normalises_criteria_and_flags_missing_ones(tmp_path):
    base, sft, q8, merged = record_family(tmp_path)
    board = leaderboard(weights="accuracy=0.5,speed=0.3,size=0.2")
    by_id = {e.id: e for e in board}
    # accuracy 0.40..0.60, speed 10..30 (merged unmeasured), size 1000..4000 bytes (smaller is better)
    assert by_id[sft].normalised == {"accuracy": 1.0, "speed": 0.0, "size": 0.0}
    assert by_id[q8].normalised == pytest.approx({"accuracy": 0.75, "speed": 1.0, "size": 1.0})
    assert by_id[merged].missing == ["speed"]
    assert by_id[q8].total == pytest.approx(0.5 * 0.75 + 0.3 + 0.2)
    assert [e.id for e in board][0] == q8
    assert [e.id for e in leaderboard(sort="lmstack_mc/acc")] == [sft, q8, merged, base]
    with pytest.raises(LmstackError, match="unknown criterion 'latency'"):
        leaderboard(weights="latency=1")
    with pytest.raises(LmstackError, match="finite number >= 0"):
        parse_weights("accuracy=-1")


def test_family_tree_from_any_member(tmp_path):
    base, sft, q8, merged = record_family(tmp_path)
    tree = family(q8)
    assert tree.roots == [base] and set(tree.nodes) == {base, sft, q8, merged}
    assert tree.depth() == {base: 0, sft: 1, q8: 2, merged: 2}
    from rich.console import Console

    console = Console(record=True, width=120)
    console.print(render_text(tree))
    title, text = console.export_text().split("\n", 1)
    assert title == f"family of {q8}" and text.index(base) < text.index(sft) < text.index(q8)
    assert f"{merged} (see above)" in text  # a merge is drawn under one parent, referenced under the other
    png = render_png(tree, tmp_path / "tree.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_measured_speed_feeds_the_speed_criterion(tiny_model_dir):
    from lmstack.eval.speed import measure_speed

    speeds = measure_speed(str(tiny_model_dir), new_tokens=8, repeats=1, dtype="fp32")
    assert speeds["decode_tokens_per_second"] > 0 and speeds["prefill_tokens_per_second"] > 0
    [entry] = leaderboard()
    assert entry.scores["speed/decode_tokens_per_second"] == speeds["decode_tokens_per_second"]

"""Bit flips and non-finite values in checkpoints and results are errors that name the file."""

import io
import json
import random

import pytest
import torch

from reliability_common import TINY, kcrl
from kcrl.benchmarks.train import TrainConfig, train
from kcrl.checkpoint import (
    HASH_KEY, CheckpointError, content_hash, json_text, load_checkpoint, read_json, save_checkpoint, write_json,
)
from kcrl.errors import NonFiniteError


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("integrity") / "run"
    train(TrainConfig.from_dict(TINY), out, show_progress=False)
    return out


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b or (a != a and b != b)


def test_every_sampled_bit_flip_is_caught_or_harmless(run, tmp_path):
    """One flipped bit anywhere in checkpoint.pt: a CheckpointError naming the file, or (a flip in
    bytes torch never reads) exactly the original contents. Never other weights."""
    data = (run / "checkpoint.pt").read_bytes()
    original = load_checkpoint(run / "checkpoint.pt")
    rng = random.Random(0)
    positions = sorted(rng.sample(range(len(data)), 60)) + [len(data) // 2, len(data) - 30]
    caught = 0
    for pos in positions:
        flipped = bytearray(data)
        flipped[pos] ^= 1 << rng.randrange(8)
        path = tmp_path / "checkpoint.pt"
        path.write_bytes(bytes(flipped))
        try:
            state = load_checkpoint(path)
        except CheckpointError as exc:
            assert str(path) in str(exc)
            caught += 1
            continue
        assert _same(state, original), f"a flip at byte {pos} changed the contents silently"
    assert caught >= len(positions) // 2


def test_a_flip_in_the_weights_is_a_hash_mismatch(run, tmp_path):
    state = load_checkpoint(run / "checkpoint.pt")
    weights = state["generator"][next(iter(state["generator"]))]
    weights.view(-1).view(torch.int32)[0] ^= 1  # the lowest mantissa bit of one weight
    buffer = io.BytesIO()
    torch.save({**state, HASH_KEY: content_hash(load_checkpoint(run / "checkpoint.pt"))}, buffer)
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(buffer.getvalue())
    with pytest.raises(CheckpointError, match=r"is corrupt: its contents do not match the SHA-256"):
        load_checkpoint(path)


def test_nan_weights_are_refused_on_save_and_on_load(run, tmp_path):
    state = load_checkpoint(run / "checkpoint.pt")
    key = next(iter(state["generator"]))
    state["generator"][key] = torch.full_like(state["generator"][key], float("nan"))
    with pytest.raises(NonFiniteError, match=r"holds NaN or inf; the previous checkpoint is kept"):
        save_checkpoint(tmp_path / "checkpoint.pt", state)
    assert not (tmp_path / "checkpoint.pt").exists()
    buffer = io.BytesIO()  # a writer other than kcrl's: a valid hash over NaN weights
    torch.save({**state, HASH_KEY: content_hash(state)}, buffer)
    (tmp_path / "checkpoint.pt").write_bytes(buffer.getvalue())
    with pytest.raises(CheckpointError, match=rf"holds NaN or inf in \['generator'\]\['{key}'\]"):
        load_checkpoint(tmp_path / "checkpoint.pt")


def test_kcrl_evaluate_on_a_corrupt_checkpoint_exits_2(run, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    data = bytearray((copy / "checkpoint.pt").read_bytes())
    data[len(data) // 2] ^= 0x10
    (copy / "checkpoint.pt").write_bytes(bytes(data))
    done = kcrl("evaluate", str(copy))
    assert done.returncode == 2 and "checkpoint.pt" in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == ""  # no numbers printed from a corrupt file


def test_json_results_never_hold_nan_and_carry_a_hash(tmp_path):
    with pytest.raises(NonFiniteError, match=r"holds a non-finite number at 'last.loss'"):
        json_text({"kl": 0.1, "last": {"loss": float("nan")}})
    path = write_json(tmp_path / "metrics.json", {"kl": 0.25, "iteration": 3})
    assert read_json(path) == {"kl": 0.25, "iteration": 3}
    text = path.read_text().replace("0.25", "0.35")
    path.write_text(text)
    with pytest.raises(CheckpointError, match="was changed after it was written"):
        read_json(path)


def test_metrics_json_of_a_run_verifies(run):
    metrics = read_json(run / "metrics.json")
    assert metrics["iteration"] == TINY["trainer"]["iterations"]
    assert "NaN" not in (run / "metrics.json").read_text()
    json.loads((run / "metrics.json").read_text())  # strict JSON


def test_results_json_never_holds_nan(tmp_path):
    from kcrl.benchmarks.report import write_results

    write_results(tmp_path, "suite", 0, {}, {"ok": 1.0, "bad": float("nan"), "curve": [1.0, float("inf")]}, "text")
    text = (tmp_path / "results.json").read_text()
    record = json.loads(text)  # strict parsers reject NaN; json.loads would accept it, so check the text too
    assert "NaN" not in text and "Infinity" not in text
    assert record["metrics"]["bad"] is None and record["metrics"]["curve"] == [1.0, None]
    assert record["non_finite"] == ["metrics.bad", "metrics.curve[1]"]

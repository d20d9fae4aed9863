"""Try each class of failure of the reliability tier and count the outcomes.

    OMP_NUM_THREADS=1 python tests/reliability/tally.py

For each class it prints tries, typed errors (a kcrl error, or for signals the conventional exit
code with a checkpoint that resumes), untyped errors (a traceback of another type), silent
(accepted although wrong, or a changed result without an error) and lost (results or checkpoints
gone or no longer equal to an uninterrupted run). A flipped bit that torch never reads and that
leaves the contents exactly as they were counts as "harmless".
"""

from __future__ import annotations

import errno
import io
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import kcrl  # noqa: E402,F401  (registers the envs)
from reliability_common import TABULAR, TINY, kcrl as kcrl_cli, kcrl_popen, write_config  # noqa: E402
from kcrl.benchmarks.runner import run_suite  # noqa: E402
from kcrl.benchmarks.train import TrainConfig, sample, train  # noqa: E402
from kcrl.checkpoint import HASH_KEY, content_hash, json_text, load_checkpoint, read_json, write_json  # noqa: E402
from kcrl.constraints import RuleConstraint  # noqa: E402
from kcrl.errors import KcrlError  # noqa: E402
from kcrl.runlock import RunLock  # noqa: E402
from kcrl.trainer import PRConfig  # noqa: E402

torch.set_num_threads(1)
COUNTS: dict[str, Counter] = defaultdict(Counter)
ROOT = Path(tempfile.mkdtemp(prefix="kcrl-tally-"))
CONFIG = TrainConfig.from_dict(TINY)


def folder(name: str) -> Path:
    path = ROOT / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def expect_error(kind: str, fn, *args, lost=None, **kwargs) -> None:
    """One try that should be refused: typed / untyped / silent, and lost when ``lost()`` says so."""
    COUNTS[kind]["tries"] += 1
    try:
        fn(*args, **kwargs)
        COUNTS[kind]["silent"] += 1
    except KcrlError:
        COUNTS[kind]["typed"] += 1
    except Exception:  # noqa: BLE001 - counted
        COUNTS[kind]["untyped"] += 1
    if lost is not None and lost():
        COUNTS[kind]["lost"] += 1


def cli_error(kind: str, *args: str) -> None:
    """A ``kcrl`` command that should exit 2 with a one-line kcrl error."""
    COUNTS[kind]["tries"] += 1
    done = kcrl_cli(*args)
    if done.returncode == 2 and "kcrl: error:" in done.stderr and "Traceback" not in done.stderr:
        COUNTS[kind]["typed"] += 1
    elif done.returncode == 0:
        COUNTS[kind]["silent"] += 1
    else:
        COUNTS[kind]["untyped"] += 1


def same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b or (a != a and b != b)


# ---------------------------------------------------------------------- the classes
def concurrent_writers() -> None:
    kind = "concurrent writers"
    out = folder("locked")
    reference = train(CONFIG, out, show_progress=False)
    before = (out / "checkpoint.pt").read_bytes()
    with RunLock(out, "kcrl train first.yaml --out locked"):
        other = TrainConfig.from_dict({**TINY, "seed": 9})
        for kwargs in ({}, {"resume": True}, {"force": True}, {"resume": True, "force": True}):
            expect_error(kind, train, other, out, show_progress=False, **kwargs,
                         lost=lambda: (out / "checkpoint.pt").read_bytes() != before)
        expect_error(kind, RunLock(out).acquire)
        expect_error(kind, run_suite, "tabular-exact", out=out, show_progress=False, force=True)
    config = write_config(folder("locked-cli"), {**TABULAR, "seed": 1})
    busy = folder("busy") / "run"
    proc = kcrl_popen("train", str(config), "--out", str(busy), "--no-progress")
    while proc.poll() is None and not (busy / ".kcrl.lock").exists():
        time.sleep(0.05)
    cli_error(kind, "train", str(config), "--out", str(busy), "--force", "--no-progress")
    proc.communicate(timeout=120)
    COUNTS[kind]["lost"] += int(proc.returncode != 0 or TrainConfig.saved(busy).seed != 1)
    assert read_json(out / "metrics.json") == reference


def bit_flips() -> None:
    kind = "checkpoint / result corruption"
    out = folder("flips") / "run"
    train(CONFIG, out, show_progress=False)
    data, original = (out / "checkpoint.pt").read_bytes(), load_checkpoint(out / "checkpoint.pt")
    rng = random.Random(1)
    path = folder("flipped") / "checkpoint.pt"
    for pos in rng.sample(range(len(data)), 100):
        flipped = bytearray(data)
        flipped[pos] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(flipped))
        COUNTS[kind]["tries"] += 1
        try:
            state = load_checkpoint(path)
        except KcrlError:
            COUNTS[kind]["typed"] += 1
            continue
        except Exception:  # noqa: BLE001
            COUNTS[kind]["untyped"] += 1
            continue
        COUNTS[kind]["harmless" if same(state, original) else "silent"] += 1
    state = load_checkpoint(out / "checkpoint.pt")
    key = next(iter(state["generator"]))
    state["generator"][key] = torch.full_like(state["generator"][key], float("nan"))
    buffer = io.BytesIO()
    torch.save({**state, HASH_KEY: content_hash(state)}, buffer)
    path.write_bytes(buffer.getvalue())
    expect_error(kind, load_checkpoint, path)  # NaN weights with a valid hash
    run = folder("nan-run")
    shutil.copytree(out, run / "run")
    (run / "run" / "checkpoint.pt").write_bytes(buffer.getvalue())
    cli_error(kind, "evaluate", str(run / "run"))  # kcrl evaluate on NaN weights
    expect_error(kind, json_text, {"kl": float("nan")})
    metrics = write_json(folder("json") / "metrics.json", {"kl": 0.25})
    metrics.write_text(metrics.read_text().replace("0.25", "0.26"))
    expect_error(kind, read_json, metrics)


def signals() -> None:
    kind = "signals"
    values = {**TABULAR, "trainer": {**TABULAR["trainer"], "iterations": 150, "checkpoint_every": 2}}
    reference = folder("signals") / "reference"
    train(TrainConfig.from_dict(values), reference, show_progress=False)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        COUNTS[kind]["tries"] += 1
        base = folder(f"signal-{signum}")
        config, out = write_config(base, values), base / "run"
        proc = kcrl_popen("train", str(config), "--out", str(out), "--no-progress")
        while proc.poll() is None and not ((out / "checkpoint.pt").is_file()
                                           and load_checkpoint(out / "checkpoint.pt")["iteration"] >= 4):
            time.sleep(0.02)
        os.kill(proc.pid, signum)
        _, stderr = proc.communicate(timeout=60)
        if proc.returncode == 128 + signum and "--resume" in stderr and "Traceback" not in stderr:
            COUNTS[kind]["typed"] += 1
        elif proc.returncode == 0:
            COUNTS[kind]["silent"] += 1
        else:
            COUNTS[kind]["untyped"] += 1
        try:
            train(TrainConfig.saved(out), out, resume=True, show_progress=False)
            ok = same(load_checkpoint(out / "checkpoint.pt"), load_checkpoint(reference / "checkpoint.pt"))
        except Exception:  # noqa: BLE001
            ok = False
        COUNTS[kind]["lost"] += int(not ok)


def folders_and_disk() -> None:
    import kcrl.benchmarks.tabular_exact as suite
    import kcrl.checkpoint as checkpoint
    import kcrl.runlock as runlock

    kind = "output folders / disk full"
    (ROOT / "a-file").write_text("x")
    for out in (ROOT / "a-file", ROOT / "a-file" / "run"):
        expect_error(kind, train, CONFIG, out, show_progress=False)
        expect_error(kind, run_suite, "tabular-exact", out=out, show_progress=False)
    done = folder("done")
    (done / "results.json").write_text("{}")
    expect_error(kind, run_suite, "tabular-exact", out=done, show_progress=False,
                 lost=lambda: (done / "results.json").read_text() != "{}")
    held = folder("held") / "run"
    train(CONFIG, held, show_progress=False)
    expect_error(kind, train, CONFIG, held, show_progress=False)  # not empty, no --resume / --force
    real_mkstemp, real_fdopen = runlock.tempfile.mkstemp, checkpoint.os.fdopen
    for err in (errno.EACCES, errno.EROFS, errno.ENOSPC):
        def refused(*a, _err=err, **k):
            raise OSError(_err, os.strerror(_err))
        runlock.tempfile.mkstemp = refused
        try:
            expect_error(kind, train, CONFIG, folder(f"refused-{err}") / "run", show_progress=False)
        finally:
            runlock.tempfile.mkstemp = real_mkstemp
    suite_run = suite.run
    suite.run = lambda *a, **k: (_ for _ in ()).throw(AssertionError("computed before the check"))
    try:
        expect_error(kind, run_suite, "tabular-exact", out=ROOT / "a-file", show_progress=False)
    finally:
        suite.run = suite_run
    for after in (1, 2, 3, 4):  # ENOSPC from the n-th write on
        out = folder(f"full-{after}") / "run"
        count = {"n": 0}

        def fdopen(fd, *a, _after=after, **k):
            count["n"] += 1
            fh = real_fdopen(fd, *a, **k)
            if count["n"] > _after:
                fh.write = lambda data: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device"))
            return fh

        checkpoint.os.fdopen = fdopen
        try:
            good = None
            expect_error(kind, train, CONFIG, out, show_progress=False)
        finally:
            checkpoint.os.fdopen = real_fdopen
        try:  # the last checkpoint written before the disk filled must load, and resume to the end
            if (out / "checkpoint.pt").exists():
                load_checkpoint(out / "checkpoint.pt")
            good = train(CONFIG, out, resume=(out / "checkpoint.pt").exists(), force=True, show_progress=False)
        except Exception:  # noqa: BLE001
            good = None
        COUNTS[kind]["lost"] += int(good is None or [p for p in out.iterdir() if p.name.endswith(".tmp")] != [])


def ranges() -> None:
    from test_ranges import BAD

    kind = "value ranges / YAML"
    for values, _ in BAD:
        expect_error(kind, TrainConfig.from_dict,
                     {**TINY, **values, "trainer": {**TINY["trainer"], **values.get("trainer", {})}})
    for kwargs in ({"lam": -1.0}, {"generator_lr": float("nan")}, {"seed": 2**64}, {"samples": 0}):
        expect_error(kind, PRConfig, **kwargs)
    base = folder("yaml")
    (base / "dup.yaml").write_text("seed: 1\nseed: 2\n")
    cli_error(kind, "train", str(base / "dup.yaml"), "--out", str(base / "run"))
    (base / "dup2.yaml").write_text("trainer: {iterations: 5, iterations: 6}\n")
    cli_error(kind, "train", str(base / "dup2.yaml"), "--out", str(base / "run"))
    (base / "latin1.yaml").write_bytes(b"variant: \xe9\n")
    cli_error(kind, "train", str(base / "latin1.yaml"), "--out", str(base / "run"))
    run = folder("sample") / "run"
    train(CONFIG, run, show_progress=False)
    for n, seed in ((-5, 0), (0, 0), (2, 2**70), (2, -1), (2, 2**64)):
        expect_error(kind, sample, run, n, seed)
    cli_error(kind, "sample", str(run), "-n", "-5")
    cli_error(kind, "sample", str(run), "-n", "2", "--seed", str(2**70))


def envs() -> None:
    kind = "envs"
    env = gym.make("TabularSequence-v0").unwrapped
    env.reset(seed=0)
    env.set_constraint(RuleConstraint(lambda x, c: torch.full((x.shape[0],), float("nan"))))
    for token in range(3):
        env.step(token)
    for _ in range(3):
        expect_error(kind, env.step, 3,
                     lost=lambda: not env.observation_space.contains(
                         {"tokens": env._batched.tokens[0].numpy(), "length": int(env._batched.lengths[0])}))
    single = gym.make("TabularSequence-v0")
    batched = gym.make_vec("TabularSequence-v0", num_envs=2, vectorization_mode="vector_entry_point")
    for seed in (1.5, -1, 2**64, True, "3", np.float64(2.0)):
        for e in (single, batched):
            expect_error(kind, e.reset, seed=seed)
    for env_id, kwargs in [("GaussianRing-v0", {"radius": float("inf")}), ("GaussianRing-v0", {"std": float("nan")}),
                           ("GaussianRing-v0", {"bound": float("inf")}), ("GaussianRing-v0", {"n_modes": 2.5}),
                           ("TabularSequence-v0", {"constraint_scale": float("nan")}),
                           ("TabularSequence-v0", {"constraint_scale": float("inf")}),
                           ("TabularSequence-v0", {"lenght": 3}), ("TabularSequence-v0", {"vocab_size": "4"}),
                           ("OracleSequence-v0", {"hiden_dim": 8}), ("OracleSequence-v0", {"length": -1}),
                           ("StructuredDigits-v0", {"threshold": 1.5}), ("StructuredDigits-v0", {"colour": 1})]:
        expect_error(kind, gym.make, env_id, **kwargs)
    expect_error(kind, gym.make_vec, "TabularSequence-v0", num_envs=0, vectorization_mode="vector_entry_point")


def resume() -> None:
    kind = "resume"
    empty = folder("resume-empty")
    expect_error(kind, train, CONFIG, empty, resume=True, show_progress=False)
    cli_error(kind, "train", str(write_config(folder("resume-cfg"), TINY)), "--out", str(folder("resume-cli")),
              "--resume")
    no_config = folder("resume-no-config") / "run"
    train(CONFIG, no_config, show_progress=False, stop_after=3)
    (no_config / "config.yaml").unlink()
    expect_error(kind, train, TrainConfig.from_dict({**TINY, "data_samples": 400}), no_config, resume=True,
                 show_progress=False)
    a_dir = folder("resume-dir") / "run"
    (a_dir / "checkpoint.pt").mkdir(parents=True)
    for kwargs in ({"resume": True}, {"resume": True, "force": True}, {"force": True}):
        expect_error(kind, train, CONFIG, a_dir, show_progress=False, **kwargs)
    changed = folder("resume-changed") / "run"
    train(CONFIG, changed, show_progress=False, stop_after=3)
    expect_error(kind, train, TrainConfig.from_dict({**TINY, "data_samples": 400}), changed, resume=True,
                 show_progress=False, lost=lambda: load_checkpoint(changed / "checkpoint.pt")["iteration"] != 3)


def ray() -> None:
    import socket

    from kcrl.benchmarks.runner import map_tasks

    kind = "ray"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}", "head:abc"):
        start = time.time()
        expect_error(kind, map_tasks, abs, [1], backend="ray", ray_address=address, show_progress=False)
        if time.time() - start > 15:
            COUNTS[kind]["hung"] += 1


def main() -> None:
    for part in (concurrent_writers, bit_flips, signals, folders_and_disk, ranges, envs, resume, ray):
        start = time.time()
        part()
        print(f"# {part.__name__}: {time.time() - start:.1f} s", file=sys.stderr)
    columns = ("tries", "typed", "untyped", "silent", "lost", "harmless")
    print("| class | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for kind, counts in COUNTS.items():
        print(f"| {kind} | " + " | ".join(str(counts[c]) for c in columns) + " |")
    total = sum(COUNTS.values(), Counter())
    print("| all | " + " | ".join(str(total[c]) for c in columns) + " |")
    shutil.rmtree(ROOT, ignore_errors=True)


if __name__ == "__main__":
    main()

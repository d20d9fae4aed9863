"""Data-parallel Algorithm 1: two gloo processes on the CPU reproduce one process on the same global batch.

One ``torch.multiprocessing.spawn`` runs every case on 2 ranks (process start-up dominates the
cost); the parent then runs each case in one process and compares the per-iteration losses and
statistics, and the final parameters.
"""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml

from kcrl.checkpoint import CheckpointError
from kcrl.constraints import TokenPotentialConstraint
from kcrl.distributed import DistributedPRTrainer, init_process_group, rank_seed, shard_sizes
from kcrl.models.tabular import TabularAutoregressive
from kcrl.errors import ConfigError, UnknownNameError
from kcrl.benchmarks.train import TrainConfig, train
from kcrl.trainer import PRConfig, PRTrainer

WORLD = 2
TOL = dict(rtol=1e-5, atol=1e-5)  # torch.testing.assert_close
APPROX = dict(rel=1e-5, abs=1e-5)  # pytest.approx

# name -> (sampling, PRConfig overrides). 255 samples and 127 data rows give shards of unequal size.
CASES = {
    "learned-eq10-replicated": ("replicated", dict(variant="learned")),
    "binary_d-eq12-replicated": ("replicated", dict(variant="binary_d", generator_update="eq12")),
    "learned-eq10-sharded-uneven": ("sharded", dict(variant="learned", samples=255, data_batch=127)),
    "learned-eq12-sharded-uneven": ("sharded", dict(variant="learned", generator_update="eq12", samples=255, data_batch=127)),
    "mstep-eq10-sharded": ("sharded", dict(variant="mstep")),
    # shards of 64 + 64 samples and 64 + 63 data rows: rank 0 cannot tell them apart by size, so
    # the gather asks every rank for its row count
    "learned-eq10-sharded-sizes-exchanged": ("sharded", dict(variant="learned", samples=128, data_batch=127)),
    "fixed-whole-data-sharded": ("sharded", dict(variant="fixed", data_batch=1000)),  # data_batch > data: all rows
}


def _parts(**overrides):
    """Generator, constraint, data and config of a small learning problem (V = 3, T = 3)."""
    generator = TabularAutoregressive(3, 3, generator=torch.Generator().manual_seed(1))
    data = TabularAutoregressive(3, 3, generator=torch.Generator().manual_seed(2)).sample(500, torch.Generator().manual_seed(3))[0]
    fixed = overrides.get("variant") == "fixed"
    constraint = TokenPotentialConstraint(3, 3, init_std=0.5, generator=torch.Generator().manual_seed(4))
    config = PRConfig(**{**dict(iterations=12, samples=256, data_batch=128, constraint_steps=2, checkpoint_every=4,
                                ess_warn_fraction=0.0, generator_lr=0.1, constraint_lr=0.1), **overrides})
    return generator, constraint.requires_grad_(not fixed), (data, None), config


def _state(trainer):
    """Final parameters, and the gradients of the last iteration (Adam hides a constant gradient scale)."""
    state = {}
    for part in ("generator", "constraint"):
        for key, param in getattr(trainer, part).named_parameters():
            state[f"{part}.{key}"] = param.detach().cpu().clone()
            if param.grad is not None:
                state[f"{part}.{key}.grad"] = param.grad.detach().cpu().clone()
    return state


def _rank_main(rank, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    results = {}
    for name, (sampling, overrides) in CASES.items():
        trainer = DistributedPRTrainer(*_parts(**overrides), sampling=sampling)
        results[name] = {"history": trainer.train(show_progress=False), "state": _state(trainer)}
    # Kill-and-resume under DDP: stop after 5 iterations, resume from the rank-0 checkpoint.
    sampling, overrides = CASES["learned-eq10-sharded-uneven"]
    DistributedPRTrainer(*_parts(**overrides), sampling=sampling).train(out=out_dir, show_progress=False, stop_after=5)
    resumed = DistributedPRTrainer(*_parts(**overrides), sampling=sampling)
    results["resumed"] = {"history": resumed.train(out=out_dir, resume=True, show_progress=False), "state": _state(resumed)}
    try:  # a sharded checkpoint needs the same world size: here, a replicated trainer refuses it
        DistributedPRTrainer(*_parts(**overrides), sampling="replicated").train(out=out_dir, resume=True, show_progress=False)
    except CheckpointError as exc:
        results["refused"] = str(exc)
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


class ShardedReference(PRTrainer):
    """One process drawing the global batch exactly as WORLD ranks with 'sharded' sampling do."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.streams = [torch.Generator().manual_seed(rank_seed(self.config.seed, r)) for r in range(WORLD)]

    def _data_batch(self):
        n, batch = len(self.data_x), self.config.data_batch
        if batch >= n:
            return super()._data_batch()
        idx = [torch.randint(n, (size,), generator=g) for size, g in zip(shard_sizes(batch, WORLD), self.streams)]
        return self.data_x[torch.cat(idx)], None

    def _sample(self, context):
        with torch.no_grad():
            shards = [self.generator.sample(size, generator=g)[0] for size, g in zip(shard_sizes(self.config.samples, WORLD), self.streams)]
        return torch.cat(shards), None, (1, self.config.samples), None


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_rank_main, args=(str(out / "init"), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def _single_process(name):
    sampling, overrides = CASES[name]
    trainer = (PRTrainer if sampling == "replicated" else ShardedReference)(*_parts(**overrides))
    return {"history": trainer.train(show_progress=False), "state": _state(trainer)}


def _assert_same_run(got, expected):
    assert len(got["history"]) == len(expected["history"])
    for line, reference in zip(got["history"], expected["history"]):
        assert line.keys() == reference.keys()
        for key in reference:
            assert line[key] == pytest.approx(reference[key], **APPROX), (key, line["iteration"])
    assert got["state"].keys() == expected["state"].keys()
    assert any(key.endswith(".grad") for key in expected["state"])
    for key in expected["state"]:
        torch.testing.assert_close(got["state"][key], expected["state"][key], **TOL)


@pytest.mark.parametrize("name", list(CASES))
def test_two_ranks_reproduce_one_process_on_the_same_global_batch(ddp_results, name):
    expected = _single_process(name)
    assert "generator_loss" in expected["history"][0]
    for rank in range(WORLD):  # every rank logs the global batch's numbers and holds the same parameters
        _assert_same_run(ddp_results[rank][name], expected)
    # the run actually learned something, so the comparison is not between two idle runs
    assert expected["history"][-1]["nll_data"] < expected["history"][0]["nll_data"]


def test_resume_under_ddp_matches_the_uninterrupted_run(ddp_results):
    for rank in range(WORLD):
        _assert_same_run(ddp_results[rank]["resumed"], ddp_results[rank]["learned-eq10-sharded-uneven"])
        assert "'sharded' sampling resumes only with the same number of processes" not in ddp_results[rank]["refused"]
        assert "written with 'sharded' sampling; resume it with the same sampling and 2 processes" in ddp_results[rank]["refused"]


def test_shard_sizes_cover_the_batch():
    assert shard_sizes(255, 2) == [128, 127]
    assert shard_sizes(3, 4) == [1, 1, 1, 0]
    assert sum(shard_sizes(1000, 7)) == 1000


def test_trainer_needs_a_process_group():
    assert not dist.is_initialized()
    with pytest.raises(ConfigError, match="needs an initialised torch.distributed process group; launch with `torchrun"):
        DistributedPRTrainer(*_parts())


def test_launch_outside_torchrun_says_how(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(ConfigError) as info:
        init_process_group()
    assert str(info.value) == (
        "data-parallel training needs the process-group variables that torchrun sets; missing RANK, WORLD_SIZE, "
        "MASTER_ADDR, MASTER_PORT. Launch with `torchrun --nproc_per_node N -m kcrl.cli train CONFIG --out DIR --ddp`."
    )


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_entry_point_matches_kcrl_train(tmp_path):
    """`torchrun -m kcrl.cli train --ddp` (replicated sampling) ends where `kcrl train` ends."""
    config = {"seed": 3, "variant": "learned", "data_samples": 1000, "world": {"vocab_size": 3, "length": 3},
              "trainer": {"iterations": 15, "samples": 512, "data_batch": 256, "checkpoint_every": 5}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    reference = train(TrainConfig.from_dict(config), tmp_path / "one", show_progress=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(WORLD), "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "kcrl.cli", "train", str(path), "--out",
           str(tmp_path / "ddp"), "--ddp", "--no-progress", "--ddp-sampling", "replicated"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert json.loads(proc.stdout) == metrics  # printed once, by rank 0
    assert metrics["iteration"] == 15
    assert metrics["kl_data_to_generator"] == pytest.approx(reference["kl_data_to_generator"], **APPROX)
    for key, value in reference["last"].items():
        assert metrics["last"][key] == pytest.approx(value, **APPROX), key
    assert yaml.safe_load((tmp_path / "ddp" / "config.yaml").read_text()) == yaml.safe_load((tmp_path / "one" / "config.yaml").read_text())


def test_one_process_group_is_the_plain_trainer_and_sampling_is_checked():
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        with pytest.raises(UnknownNameError, match="unknown sampling 'shraded'. Did you mean 'sharded'?"):
            DistributedPRTrainer(*_parts(), sampling="shraded")
        generator, *rest = _parts()
        generator.sample_log_prob = generator.log_prob  # a sampler with its own density
        with pytest.raises(ConfigError) as info:
            DistributedPRTrainer(generator, *rest)
        assert str(info.value) == (f"{type(generator).__name__} scores its samples with its own sample_log_prob, which "
                                   "DDP cannot wrap (gradients are synchronised through forward); train it in one process.")
        # with a world of one, the distributed trainer is the plain trainer
        single, plain = DistributedPRTrainer(*_parts(), sampling="sharded"), PRTrainer(*_parts())
        _assert_same_run({"history": single.train(show_progress=False), "state": _state(single)},
                         {"history": plain.train(show_progress=False), "state": _state(plain)})
    finally:
        dist.destroy_process_group()

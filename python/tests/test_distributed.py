"""gdc.torch.Optimizer under torch.distributed (gloo on the CPU, spawned processes, world
sizes 1, 2 and 3 so shards are uneven and some are empty): FSDP2-sharded runs equal the
single-process run (bit for bit for elementwise, whole-parameter and mixed programs; within
float64 rounding of the all-reduced partials for LAMB and global-norm clipping); the ranks
agree on a non-finite gradient; a DCP checkpoint saved at world 2 resumes at world 3; the
tiny GPT trains to the single-process losses; DDP keeps every rank identical; ZeRO-1
(zero=True over a replicated model) equals the single-process run and resumes from DCP too. The checks run
in the ranks (tests/dist_workers.py)."""

import socket

import pytest
import torch.multiprocessing as mp

import dist_workers


def _port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(fn, world, *args):
    mp.spawn(fn, args=(world, _port(), *args), nprocs=world, join=True)


@pytest.mark.parametrize("world", [1, 2, 3])
def test_fsdp2_trajectories_equal_the_single_process_run(world):
    _spawn(dist_workers.fsdp_equals_single, world)


@pytest.mark.parametrize("world", [2, 3])
def test_fsdp2_ranks_agree_on_a_non_finite_gradient(world):
    _spawn(dist_workers.fsdp_non_finite, world)


@pytest.mark.parametrize("world", [2, 3])
def test_ddp_keeps_every_rank_identical(world):
    _spawn(dist_workers.ddp_identical, world)


@pytest.mark.parametrize("world", [1, 2, 3])
def test_zero1_trajectories_equal_the_single_process_run(world):
    _spawn(dist_workers.zero_equals_single, world)


@pytest.mark.parametrize("zero", [False, True], ids=["fsdp2", "zero1"])
def test_dcp_checkpoint_saved_at_world_2_resumes_at_world_3(tmp_path, zero):
    _spawn(dist_workers.dcp_save, 2, str(tmp_path), zero)
    _spawn(dist_workers.dcp_resume, 3, str(tmp_path), zero)


@pytest.mark.parametrize("world", [2, 3])
def test_fsdp2_tiny_gpt_losses_equal_one_process(world):
    """The tiny GPT of test_gpt.py, 50 steps, each rank a slice of the same batch: the global
    loss at every step equals the single-process run's up to float32 reduction order (the
    gradient averages are summed in another order, which training then amplifies)."""
    _spawn(dist_workers.fsdp_gpt, world)

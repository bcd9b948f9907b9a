"""Evaluation data for many processes: ShardSampler partitions a split without padding (Lightning's
DistributedSampler pads), and limit_val/limit_test/limit_predict take the first N points of a split."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import DistributedSampler

from iwae_pl.data.datamodule import BinarizedDataModule, ShardSampler
from iwae_pl.errors import DataSettingError

from test_cli import QUICK, run


@pytest.mark.parametrize("n,world", [(101, 2), (101, 3), (5, 8), (300, 1)])
def test_shards_partition_the_points_without_padding(n, world):
    dataset = list(range(n))
    shards = [list(ShardSampler(dataset, world, r)) for r in range(world)]
    assert sorted(i for s in shards for i in s) == dataset  # every point exactly once
    assert [len(ShardSampler(dataset, world, r)) for r in range(world)] == [len(s) for s in shards]
    assert all(s == sorted(s) for s in shards)
    if n % world:  # the sampler Lightning would inject instead pads with repeats
        padded = [i for r in range(world) for i in DistributedSampler(dataset, world, r, shuffle=False)]
        assert len(padded) > n


def test_limits_take_the_first_points_of_the_split():
    full = BinarizedDataModule("digits", eval_batch_size=1000)
    limited = BinarizedDataModule("digits", eval_batch_size=1000, limit_val=7, limit_test=101, limit_predict=3)
    for loader, n in [("val", 7), ("test", 101), ("predict", 3)]:
        (x, index), = list(getattr(limited, f"{loader}_dataloader")())
        (x_all, index_all), = list(getattr(full, f"{loader}_dataloader")())
        assert torch.equal(index, torch.arange(n))
        assert torch.equal(x, x_all[:n])  # the same binarization: the first n points, not n fresh ones
    assert len(limited.train_dataloader().dataset) == len(full.train_dataloader().dataset)  # training untouched


def test_bad_limits_are_one_line_errors():
    with pytest.raises(DataSettingError, match="limit_val must be an integer >= 1, got 0"):
        BinarizedDataModule("digits", limit_val=0)
    with pytest.raises(DataSettingError, match="limit_test=1000 exceeds the 300 points of the digits test split"):
        BinarizedDataModule("digits", limit_test=1000).test_dataloader()


def test_cli_limit_beyond_the_split_exits_2(tmp_path):
    proc = run(["test", *QUICK, "--data.limit_test", "1000", "--trainer.logger", "false"], tmp_path, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "limit_test=1000 exceeds the 300 points" in proc.stderr and "Traceback" not in proc.stderr

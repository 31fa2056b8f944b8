"""The training sampler of `llmcls sft` and `llmcls train-encoder` (`--train_sampling_strategy group_by_length`,
their default): batches of similar lengths, in an order that depends on the seed and the epoch only.

transformers' Trainer builds its `LengthGroupedSampler` without a generator, so every epoch's order is drawn from
the global RNG. A run resumed from a checkpoint holds another RNG state than the uninterrupted run at the start of
each later epoch, and so trained those epochs on other batches (8 rows, batch 2, resumed in epoch 2: [0, 7], [1, 5]
where the uninterrupted run had [3, 4], [2, 5], [0, 1], [6, 7]). The Trainer's `random` strategy is exact because
accelerate replaces its sampler with a `SeedableRandomSampler`, reseeded with seed + epoch; this does the same for
batches grouped by length.
"""

from __future__ import annotations

import torch
from transformers.trainer_pt_utils import LengthGroupedSampler


class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
    """A `LengthGroupedSampler` whose order in epoch `e` comes from a generator seeded with `seed + e`."""

    def __init__(self, batch_size: int, lengths: list[int], seed: int):
        super().__init__(batch_size, lengths=lengths)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Called before each epoch by accelerate's data loader (and by `SeededLengthGrouping._run_epoch`)."""
        self.epoch = epoch

    def __iter__(self):
        self.generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return super().__iter__()


class SeededLengthGrouping:
    """Mixin for a `transformers.Trainer` subclass (listed before it): `group_by_length` trains with an
    `EpochSeededLengthGroupedSampler` seeded with `--data_seed`, else `--seed` (the seed accelerate gives the random
    sampler)."""

    _seeded_sampler: EpochSeededLengthGroupedSampler | None = None

    def _get_train_sampler(self, train_dataset=None):
        sampler = super()._get_train_sampler(train_dataset)
        if type(sampler) is LengthGroupedSampler:  # the lengths the Trainer read from the dataset, kept
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            sampler = self._seeded_sampler = EpochSeededLengthGroupedSampler(sampler.batch_size, sampler.lengths,
                                                                             seed)
        return sampler

    def _run_epoch(self, **kwargs):
        # The Trainer calls this with keywords, epoch among them. It sets the epoch on the data loader, which passes
        # it on to the sampler, except under DDP in the epoch a run resumes in: that loader wraps the sampler in
        # accelerate's SkipBatchSampler, BatchSamplerShard and BatchSampler, one level deeper than either reaches.
        if self._seeded_sampler is not None and "epoch" in kwargs:
            self._seeded_sampler.set_epoch(kwargs["epoch"])
        return super()._run_epoch(**kwargs)

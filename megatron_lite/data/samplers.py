"""Data-parallel batch sampling, resumable from a consumed-samples count.

Megatron's ``MegatronPretrainingSampler`` semantics: the global order of samples is the dataset
order (the dataset is already shuffled); each step of ``micro_batch_size * dp_size`` consecutive
samples is cut into ``dp_size`` contiguous micro batches and data-parallel rank ``r`` takes slice
``r``. The global stream therefore does not depend on how it is split across ranks: for a fixed
global batch, dp=1, 2 and 4 see the same samples, and a run resumed at ``consumed_samples`` sees
exactly what the uninterrupted run saw from that point on.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


class DataParallelBatchSampler:
    """Yields this rank's micro batches (lists of dataset indices), starting at ``consumed_samples``.

    With ``loop=False`` iteration stops before the first step that would run past the end of the
    dataset (a partial step is dropped, as Megatron does). With ``loop=True`` the global stream
    continues from the start of the dataset forever: global position ``p`` is dataset index
    ``p % total_samples``, so a step may straddle the end of one pass and the start of the next,
    and resuming at any ``consumed_samples`` (even past one pass) lands on the same samples.
    """

    def __init__(
        self,
        total_samples: int,
        consumed_samples: int,
        micro_batch_size: int,
        dp_rank: int,
        dp_size: int,
        loop: bool = False,
    ) -> None:
        if total_samples <= 0:
            raise ValueError(f"no samples to iterate over (total_samples={total_samples})")
        if micro_batch_size <= 0 or dp_size <= 0:
            raise ValueError(f"micro_batch_size ({micro_batch_size}) and dp_size ({dp_size}) must be positive")
        if not 0 <= dp_rank < dp_size:
            raise ValueError(f"dp_rank {dp_rank} outside [0, {dp_size})")
        if consumed_samples < 0:
            raise ValueError(f"consumed_samples must be >= 0, got {consumed_samples}")
        if not loop and consumed_samples > total_samples:
            raise ValueError(
                f"consumed_samples {consumed_samples} is past the end of the dataset ({total_samples} "
                "samples); build a longer dataset or iterate with loop=True"
            )
        self.total_samples = total_samples
        self.consumed_samples = consumed_samples
        self.micro_batch_size = micro_batch_size
        self.dp_rank = dp_rank
        self.dp_size = dp_size
        self.loop = loop

    @property
    def samples_per_step(self) -> int:
        """Samples all data-parallel ranks consume together per micro step."""
        return self.micro_batch_size * self.dp_size

    def __len__(self) -> int:
        """Micro batches left from ``consumed_samples`` (only defined with ``loop=False``)."""
        if self.loop:
            raise TypeError("a looping sampler has no length")
        return (self.total_samples - self.consumed_samples) // self.samples_per_step

    def __iter__(self) -> Iterator[list[int]]:
        step = self.samples_per_step
        # Global position of this rank's first sample in the current step.
        pos = self.consumed_samples + self.dp_rank * self.micro_batch_size
        offsets = np.arange(self.micro_batch_size, dtype=np.int64)  # [micro_batch]
        while self.loop or pos - self.dp_rank * self.micro_batch_size + step <= self.total_samples:
            yield ((pos + offsets) % self.total_samples).tolist()
            pos += step

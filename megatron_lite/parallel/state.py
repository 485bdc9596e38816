"""ParallelState: the run's topology, this rank's coordinates and its process groups.

One explicit object, passed to whatever needs it (never module globals). The axis order is
DeepSpeed's ``PipeModelDataParallelTopology`` (pipe, data, model; model innermost), so our
tensor-parallel groups and DeepSpeed's pipeline groups agree rank for rank:

    world = 8, pp = 2, tp = 2  ->  dp = 2
    rank = pipe_rank * (dp * tp) + dp_rank * tp + tp_rank

It also answers DeepSpeed's ``mpu`` protocol (``get_model_parallel_rank`` ...), so the engine
reduces gradients over our data-parallel group and clips over our model-parallel group.
``ParallelState.single()`` (no process group at all) has None groups; code checks the sizes,
not the groups, so a size-1 axis skips its collectives either way.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch.distributed as dist


@dataclass
class ParallelState:
    """Sizes, ranks and process groups of one rank (all groups exist once dist is initialized)."""

    world_size: int = 1
    rank: int = 0
    tp_size: int = 1
    pp_size: int = 1
    dp_size: int = 1
    tp_rank: int = 0
    pp_rank: int = 0
    dp_rank: int = 0
    tp_group: Any = None
    pp_group: Any = None
    dp_group: Any = None
    # DeepSpeed's ``model_parallel`` group for gradient clipping: all ranks of one model replica.
    mp_group: Any = None
    topology: Any = field(default=None, repr=False)
    # Megatron-style sequence parallelism (``sequence_parallel``, only with tp > 1): outside the
    # tensor-parallel regions the transformer layers hold [b, s/tp, h] (parallel/mappings.py).
    sequence_parallel: bool = False

    @classmethod
    def single(cls) -> ParallelState:
        """One process, no groups: the model runs exactly the same code path."""
        return cls()

    @classmethod
    def build(cls, tp_size: int, pp_size: int, sequence_parallel: bool = False) -> ParallelState:
        """Create every group from the initialized default process group.

        ``pp_size`` counts stages (use ``pipe_stages(pipe_parallel_size)``). Every rank calls
        ``new_group`` for every group in the same order, as torch.distributed requires.
        """
        from deepspeed.runtime.pipe.topology import PipeModelDataParallelTopology

        world, rank = dist.get_world_size(), dist.get_rank()
        if world % (tp_size * pp_size):
            raise ValueError(f"world size {world} is not divisible by tp {tp_size} * pp {pp_size}")
        dp_size = world // (tp_size * pp_size)
        topo = PipeModelDataParallelTopology(num_pp=pp_size, num_mp=tp_size, num_dp=dp_size)
        coord = topo.get_coord(rank)
        state = cls(
            world_size=world,
            rank=rank,
            tp_size=tp_size,
            pp_size=pp_size,
            dp_size=dp_size,
            tp_rank=coord.model,
            pp_rank=coord.pipe,
            dp_rank=coord.data,
            topology=topo,
            # GPT-NeoX: "has no effect when model_parallel_size is 1".
            sequence_parallel=sequence_parallel and tp_size > 1,
        )
        state.tp_group = my_group(topo.get_axis_comm_lists("model"), rank)
        state.pp_group = my_group(topo.get_axis_comm_lists("pipe"), rank)
        state.dp_group = my_group(topo.get_axis_comm_lists("data"), rank)
        # Ranks sharing a data-parallel index form one full model replica (all stages, all TP).
        replicas = [topo.filter_match(data=d) for d in range(dp_size)]
        state.mp_group = my_group(replicas, rank)
        return state

    def without_sequence_parallel(self) -> ParallelState:
        """The same ranks and groups, activations whole along the sequence (generation feeds
        one token at a time, which does not split across ranks)."""
        return replace(self, sequence_parallel=False)

    # ---- DeepSpeed mpu protocol -------------------------------------------------------------
    def get_model_parallel_rank(self) -> int:
        return self.tp_rank

    def get_model_parallel_world_size(self) -> int:
        return self.tp_size

    def get_model_parallel_group(self) -> Any:
        return self.tp_group

    def get_data_parallel_rank(self) -> int:
        return self.dp_rank

    def get_data_parallel_world_size(self) -> int:
        return self.dp_size

    def get_data_parallel_group(self) -> Any:
        return self.dp_group

    def get_pipe_parallel_rank(self) -> int:
        return self.pp_rank

    def get_pipe_parallel_world_size(self) -> int:
        return self.pp_size

    def get_pipe_parallel_group(self) -> Any:
        return self.pp_group

    def describe(self) -> dict[str, int]:
        """Sizes and ranks as plain ints (for logs and tests)."""
        return {
            "rank": self.rank,
            "world_size": self.world_size,
            "tp_size": self.tp_size,
            "pp_size": self.pp_size,
            "dp_size": self.dp_size,
            "tp_rank": self.tp_rank,
            "pp_rank": self.pp_rank,
            "dp_rank": self.dp_rank,
            "sequence_parallel": int(self.sequence_parallel),
        }


def my_group(rank_lists: list[list[int]], rank: int) -> Any:
    """Create all groups of one axis (collectively) and return the one holding ``rank``."""
    mine = None
    for ranks in rank_lists:
        group = dist.new_group(ranks=ranks)
        if rank in ranks:
            mine = group
    return mine

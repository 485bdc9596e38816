"""Worker used by the launcher tests: report this rank's ParallelState and group sizes.

Each rank writes ``<run_dir>/state_rank<R>.json`` with its coordinates and the sizes that an
all-reduce over each of its groups measures, so the test checks real process groups.
"""

import json
import os

import torch
import torch.distributed as dist

from megatron_lite.launcher.worker import start_worker


def measured_size(group) -> int:
    ones = torch.ones(1)
    dist.all_reduce(ones, group=group)
    return int(ones.item())


def main() -> None:
    args, state = start_worker()
    report = state.describe()
    report["measured"] = {
        "tp": measured_size(state.tp_group),
        "pp": measured_size(state.pp_group),
        "dp": measured_size(state.dp_group),
        "mp": measured_size(state.mp_group),
    }
    report["config_dp"] = args.cfg.parallel.data_parallel_size
    report["config_world"] = args.cfg.parallel.global_num_gpus
    report["env_local_rank"] = args.local_rank
    path = os.path.join(args.run_dir, f"state_rank{state.rank}.json")
    with open(path, "w") as handle:
        json.dump(report, handle)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

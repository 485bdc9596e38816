"""A rank's place in the world when a scheduler, not DeepSpeed's launch, started it.

DeepSpeed's ``launch`` (the pdsh path, ``--node_rank``, a single node) sets ``RANK``,
``LOCAL_RANK`` and ``WORLD_SIZE``. Its openmpi, mvapich and slurm runners start the script
itself through ``mpirun`` or ``srun``, which set only their own variables; DeepSpeed then needs
mpi4py to translate them. We read them directly, as GPT-NeoX's ``deepspeed_mpi`` and
``deepspeed_slurm`` do:

| scheduler        | rank                  | world size            | local rank                  |
|------------------|-----------------------|-----------------------|-----------------------------|
| Open MPI         | OMPI_COMM_WORLD_RANK  | OMPI_COMM_WORLD_SIZE  | OMPI_COMM_WORLD_LOCAL_RANK  |
| MVAPICH          | MV2_COMM_WORLD_RANK   | MV2_COMM_WORLD_SIZE   | MV2_COMM_WORLD_LOCAL_RANK   |
| MPICH (Hydra)    | PMI_RANK              | PMI_SIZE              | MPI_LOCALRANKID             |
| Slurm (``srun``) | SLURM_PROCID          | SLURM_NTASKS          | SLURM_LOCALID               |

The rendezvous address and port come from the resolved config (deepy.py records both).
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

MPI_VARIABLES = (
    ("Open MPI", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
    ("MVAPICH", "MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_LOCAL_RANK"),
    ("MPICH", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),
)
SLURM_VARIABLES = (("Slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"),)


class SchedulerEnvError(RuntimeError):
    """deepspeed_mpi / deepspeed_slurm is set but the scheduler's variables are missing."""


def _found(environ: Mapping[str, str], table: tuple) -> dict[str, str] | None:
    for _name, rank, size, local in table:
        if rank in environ and size in environ:
            return {"RANK": environ[rank], "WORLD_SIZE": environ[size],
                    "LOCAL_RANK": environ.get(local, "0")}
    return None


def scheduler_ranks(environ: Mapping[str, str], mpi: bool = False, slurm: bool = False) -> dict[str, str] | None:
    """``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` from the scheduler's variables, or None.

    ``slurm``/``mpi`` (GPT-NeoX's ``deepspeed_slurm``/``deepspeed_mpi``): that scheduler's
    variables are required and win over a ``RANK`` already set. Otherwise they are used only when
    no launcher set ``RANK`` (MPI first: ``mpirun`` inside a Slurm allocation also sees Slurm's).
    """
    if slurm or mpi:
        table = SLURM_VARIABLES if slurm else MPI_VARIABLES
        found = _found(environ, table)
        if found is None:
            key = "deepspeed_slurm" if slurm else "deepspeed_mpi"
            names = " or ".join(row[1] for row in table)
            raise SchedulerEnvError(f"{key}: true but {names} is not set (start the ranks with "
                                    f"{'srun' if slurm else 'mpirun'})")
        return found
    if "RANK" in environ:
        return None
    return _found(environ, MPI_VARIABLES + SLURM_VARIABLES)


def apply_scheduler_ranks(environ: MutableMapping[str, str], master_addr: str | None,
                          master_port: int | None, mpi: bool = False, slurm: bool = False) -> None:
    """Set the torch.distributed variables from the scheduler's, in ``environ`` (os.environ)."""
    found = scheduler_ranks(environ, mpi=mpi, slurm=slurm)
    if found is None:
        return
    environ.update(found)
    if master_addr:
        environ.setdefault("MASTER_ADDR", master_addr)
    if master_port:
        environ.setdefault("MASTER_PORT", str(master_port))

"""Multi-process training through ``torchrun``: DistributedDataParallel, gloo on CPU, nccl on GPU.

``torchrun --nproc-per-node N -m volsam train ...`` (or with ``--nnodes`` and a rendezvous for
several machines) sets RANK, WORLD_SIZE and LOCAL_RANK; each process then trains on its share of
every epoch's samples, gradients are averaged across processes, and process 0 alone validates,
writes checkpoints, the log and progress bars.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls) -> DistributedContext:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        return cls(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))

    def start(self, device) -> None:
        """Join the process group (nccl for CUDA devices, gloo otherwise)."""
        if not self.enabled:
            return
        import torch.distributed as dist

        if not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            dist.init_process_group(backend=backend, rank=self.rank, world_size=self.world_size)

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def broadcast_object(self, value):
        """Process 0's ``value`` on every process."""
        if not self.enabled:
            return value
        import torch.distributed as dist

        holder = [value]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def stop(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()

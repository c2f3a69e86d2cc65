"""Whether this process is one of several in a torch.distributed job: the one test every multi-process path uses."""

from __future__ import annotations

import torch.distributed as dist


def several_processes() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1

"""The devices a worker trains on: one trainer per device at once.

``trainer.devices`` (or ``--devices``) names them: ``0,1,2,3`` (CUDA device indices),
``auto`` (every visible CUDA device; without CUDA, one CPU trainer) or ``cpu:N`` (N CPU
trainers); unset, one trainer on whatever device the environment gives it, as before.
A trainer sees only its device: ``CUDA_VISIBLE_DEVICES`` is set to it (empty for a CPU
trainer), and its ``device`` hyperparameter says which kind it trains on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Device:
    """One place a trainer runs: ``name`` is what the fleet and the trial record."""

    name: str
    cuda_index: str | None = None  # the CUDA device a CUDA trainer sees as its only one
    kind: str | None = None  # the trainer's device hyperparameter; None: its own default

    def environment(self) -> dict[str, str]:
        """The variables a trainer on this device gets beside the worker's environment."""
        if self.kind is None:
            return {}
        return {"CUDA_VISIBLE_DEVICES": self.cuda_index or ""}

    def hparams(self) -> dict[str, str]:
        return {} if self.kind is None else {"device": self.kind}


# One trainer on whatever device the environment gives it (no trainer.devices).
DEFAULT_DEVICE = Device("default")


def resolve_devices(spec: str | None) -> list[Device]:
    """The devices of a spec that ``trainer.devices`` validated."""
    if spec is None:
        return [DEFAULT_DEVICE]
    if spec.startswith("cpu:"):
        return [Device(f"cpu:{i}", kind="cpu") for i in range(int(spec.removeprefix("cpu:")))]
    indices = visible_cuda_devices() if spec == "auto" else spec.split(",")
    if not indices:  # auto on a machine without CUDA
        return [Device("cpu:0", kind="cpu")]
    return [Device(f"cuda:{index}", cuda_index=index, kind="cuda") for index in indices]


def visible_cuda_devices() -> list[str]:
    """The CUDA devices this process may use, as ``CUDA_VISIBLE_DEVICES`` names them."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [index.strip() for index in visible.split(",") if index.strip()]
    import torch  # only for auto, and only here: the worker itself needs no torch

    # NVML counts the devices without creating a CUDA context in the worker.
    return [str(index) for index in range(torch.cuda.device_count())]

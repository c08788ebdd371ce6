"""The participant's compute path for one micro-batch: forward → softmax → clip → noise.

Runs on a worker thread (never the event loop). The noise generator is seeded per batch
from the OS entropy pool and the seed is never published (DESIGN §5).
"""

from __future__ import annotations

import secrets
from typing import Any

import numpy as np
import torch
from torch import nn

from fi_stream.models import ModelSpec
from fi_stream.privacy import GaussianMechanism, privatize


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class InferenceEngine:
    """Holds the model on its device; `infer` is thread-safe for one caller at a time."""

    def __init__(self, module: nn.Module, spec: ModelSpec, mechanism: GaussianMechanism,
                 device: torch.device) -> None:
        self.spec = spec
        self.mechanism = mechanism
        self.device = device
        self.module = module.to(device).eval()

    def infer(self, batch: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """(N, *input_shape) float32 → (N, classes) float32 noised probability vectors."""
        generator = torch.Generator(device=self.device)
        generator.manual_seed(secrets.randbits(63))
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self.device, non_blocking=True)
            probs = torch.softmax(self.module(x).float(), dim=-1)
            noised = privatize(probs, self.mechanism, generator)
            out: np.ndarray[Any, Any] = noised.cpu().numpy()
        return out

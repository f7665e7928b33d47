"""EMA weights: an exponential moving average of the trained weights, what diffusers' training scripts
(``--use_ema``, ``EMAModel``) and ai-toolkit (``ema_config``) keep for image models. The loop updates it after each
optimizer step; validation, samples and the checkpoints' model folders use the averaged weights, training goes on
with the raw ones. Its state is saved with Accelerate's, so a resumed run averages on from where it stopped."""

from __future__ import annotations

from contextlib import contextmanager


class ExponentialAverage:
    def __init__(self, parameters, decay: float):
        self.parameters = list(parameters)
        self.decay = float(decay)
        self.shadow = [p.detach().clone() for p in self.parameters]
        self.updates = 0

    def rate(self) -> float:
        """The decay of this update: ramped up as diffusers' EMAModel does ((1 + n) / (10 + n)), so the first
        steps' weights do not weigh on the average for the rest of a short run."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    def update(self) -> None:
        import torch

        decay = self.rate()
        with torch.no_grad():
            torch._foreach_lerp_(self.shadow, [p.detach() for p in self.parameters], 1.0 - decay)
        self.updates += 1

    @contextmanager
    def applied(self):
        """The averaged weights in the model for the ``with`` block, the trained ones back after it."""
        import torch

        with torch.no_grad():
            trained = [p.detach().clone() for p in self.parameters]
            for parameter, average in zip(self.parameters, self.shadow):
                parameter.copy_(average)
        try:
            yield
        finally:
            with torch.no_grad():
                for parameter, weights in zip(self.parameters, trained):
                    parameter.copy_(weights)

    # Accelerate's register_for_checkpointing saves and loads these with the run's state.
    def state_dict(self) -> dict:
        return {"shadow": [s.cpu() for s in self.shadow], "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        for average, saved in zip(self.shadow, state["shadow"]):
            average.copy_(saved)
        self.updates = int(state["updates"])

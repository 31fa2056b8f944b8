"""The FLOPs estimate `transformers.Trainer` logs (`total_flos`), from a parameter count taken once.

The Trainer adds `6 x tokens x parameters` (embeddings excluded) to its running total at every training step, and
counts the model's parameters again each time: a walk over every module and parameter, host time a launch-bound GPU
waits through (3.9 ms a step on a 24-layer model, session 6; 3.1 ms on a 12-layer BERT, session 14, both on this
repository's 2-core machine). `CountedFlops` gives the same number from one count per model.
"""

from __future__ import annotations


class CountedFlops:
    """Mixin for a `transformers.Trainer` subclass (listed before it): `floating_point_ops` as the Trainer's own
    (the model's `floating_point_ops`: 6 x the main input's elements x the parameters without embeddings; 0 for a
    model without `num_parameters` or an input without the main input), the parameters counted once per model."""

    _counted: tuple[int, int] | None = None  # (id of the model counted, its parameters without embeddings)

    def floating_point_ops(self, inputs) -> int:
        name = getattr(self.model, "main_input_name", "input_ids")
        if name not in inputs or not hasattr(self.model, "num_parameters"):
            return 0
        if self._counted is None or self._counted[0] != id(self.model):
            self._counted = (id(self.model), self.model.num_parameters(exclude_embeddings=True))
        return 6 * inputs[name].numel() * self._counted[1]

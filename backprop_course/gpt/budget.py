"""A run limited by steps *and* seconds: when to stop, and where the schedule stands.

``TrainConfig.max_iters`` plans the run; ``TrainConfig.max_seconds`` caps its
time on a slow or busy machine. The learning-rate schedule (warmup, then a
cosine down to ``min_lr``) is planned over ``max_iters`` steps, so stopping
early on time alone would leave the rate high and the model unsettled: a
cosine cut at half way still trains at about half the peak rate.

So the schedule follows whichever limit is nearer. After warmup it reads its
position as the further along of the step count and the fraction of the time
budget spent (``schedule_step``): on a machine fast enough for ``max_iters``
steps within the budget nothing changes (the same run, bit for bit); on a
slower one the cosine is compressed into the time there is, and the last step
before the budget runs out trains near ``min_lr``. Warmup always counts steps
(skipping it would start a run at full rate), so a budget that ends during
warmup ends the run there. The price: the schedule of a budget-limited run
depends on the machine's speed, so two such runs differ.
"""

from __future__ import annotations

__all__ = ["TimeBudget"]


class TimeBudget:
    """Stop and schedule by ``max_iters`` steps or ``max_seconds`` of training, whichever
    comes first (``max_seconds=None``: steps only).

    ``reserve_steps`` keeps time inside the budget for work after the loop (the final
    validation), counted in training steps at the pace so far; ``out_of_time`` stops
    before a step that would end past what is left.
    """

    def __init__(
        self,
        max_iters: int,
        max_seconds: float | None = None,
        warmup_iters: int = 0,
        reserve_steps: float = 0.0,
    ):
        self.max_iters = max_iters
        self.max_seconds = max_seconds
        self.warmup_iters = warmup_iters
        self.reserve_steps = reserve_steps

    def seconds_for_training(self, steps_done: int, elapsed: float) -> float | None:
        """The part of the budget the loop may use: all of it but the reserve (None: no budget)."""
        if self.max_seconds is None:
            return None
        pace = elapsed / steps_done if steps_done else 0.0
        return max(0.0, self.max_seconds - pace * self.reserve_steps)

    def schedule_step(self, step: int, elapsed: float) -> int:
        """The step to read the schedule at: ``step``, or further when time runs out first."""
        limit = self.seconds_for_training(step, elapsed)
        if limit is None or step < self.warmup_iters:
            return step
        by_time = int(self.max_iters * elapsed / limit) if limit > 0 else self.max_iters
        return min(self.max_iters - 1, max(step, by_time))

    def out_of_time(self, steps_done: int, elapsed: float) -> bool:
        """True when one more step (at the average pace so far) would end past the budget."""
        limit = self.seconds_for_training(steps_done, elapsed)
        if limit is None:
            return False
        pace = elapsed / steps_done if steps_done else 0.0
        return elapsed + pace > limit

    def planned_steps(self, steps_done: int, elapsed: float) -> int:
        """The steps the run will reach at the pace so far (for the progress bar's total)."""
        limit = self.seconds_for_training(steps_done, elapsed)
        if limit is None or steps_done == 0 or elapsed <= 0:
            return self.max_iters
        return max(steps_done, min(self.max_iters, int(steps_done * limit / elapsed)))

"""What ``volsam weights inspect`` says of a checkpoint file: one dataclass, filled by each
method's detectors (in the model packages) and printed by the CLI."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class CheckpointReport:
    """A checkpoint described.

    ``usable`` is False for a damaged file, for a recognised kind that no volsam model accepts
    (SAM ViT-L/H) and for a known layout that fails strict checking (``problems`` says why).
    Counts are in tensor elements; ``buffers`` lists the names of non-parameter tensors, which
    ``parameter_count`` leaves out. ``trainable_count`` follows the method's freezing rule
    (``trainable_rule`` names it).
    """

    path: str
    kind: str
    usable: bool
    summary: str
    tensor_count: int = 0
    parameter_count: int = 0
    buffer_count: int = 0
    buffers: list[str] = field(default_factory=list)
    trainable_count: int | None = None
    trainable_rule: str = ""
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """Human-readable report, one fact per line."""
        out = [f"file: {self.path}", f"kind: {self.kind}", f"usable: {'yes' if self.usable else 'no'}",
               f"summary: {self.summary}"]
        if self.tensor_count:
            out += [f"tensors: {self.tensor_count:,}", f"parameters: {self.parameter_count:,}",
                    f"buffers: {self.buffer_count:,} elements in {len(self.buffers)} tensors"]
            out += [f"  buffer {name}" for name in _compact(self.buffers)]
        if self.trainable_count is not None:
            out.append(f"trainable: {self.trainable_count:,} ({self.trainable_rule})")
        out += [f"note: {note}" for note in self.notes]
        out += [f"problem: {problem}" for problem in self.problems]
        return out


def _compact(names: list[str], limit: int = 12) -> list[str]:
    return names if len(names) <= limit else names[:limit] + [f"... and {len(names) - limit} more"]

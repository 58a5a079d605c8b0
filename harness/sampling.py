"""Drawing many samples at once: trajectories from several problems share a batch, each with its own
random stream.

Pass@k evaluation draws k samples for each of many problems. At k = 1 or k = 10 one problem alone
fills a tenth of a batch, so `sample(problems, n)` flattens the (problem, sample index) pairs into
trajectories and fills batches of `batch_size` with them, whatever problem they come from.

What makes that safe is the random stream: trajectory i of a problem draws every random number it
uses (initial noise, the uniforms that pick its tokens) from its own `torch.Generator`, seeded from
(evaluation seed, task_id, i). So a sample depends on its seed, its problem and its index, never on
the batch size, on which problems share its batch or on where an interrupted evaluation resumed
(up to the last bits of floating point, which a batched matmul may round differently).

Tokens are drawn by inversion: token = the first index where the (nucleus-filtered) CDF of the
tempered softmax reaches u, u ~ U(0, 1) from the trajectory's stream. That is exact sampling from
the distribution, and vectorised over the batch with one uniform per row.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

_MIX = 0x9E3779B97F4A7C15  # the golden-ratio constant of splitmix64: neighbouring indices get unrelated seeds
_MASK = 2**63 - 1


def problem_seed(seed: int, task_id: str) -> int:
    """The seed of one problem's samples under evaluation seed `seed`."""
    return (seed * 2_654_435_761 + zlib.crc32(task_id.encode())) & _MASK


def trajectory_seed(seed: int, task_id: str, index: int) -> int:
    """The seed of sample `index` of a problem: a splitmix64 step of the problem's seed and the index."""
    z = (problem_seed(seed, task_id) + (index + 1) * _MIX) & (2**64 - 1)
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & (2**64 - 1)
    return (z ^ (z >> 31)) & _MASK


@dataclass(frozen=True)
class Trajectory:
    """Sample `index` of `problems[problem]` in one `sample` call, and the seed of its random stream."""

    problem: int
    index: int
    seed: int


def trajectories(problems: Sequence[dict], n: int, seed: int) -> list[Trajectory]:
    return [Trajectory(p, i, trajectory_seed(seed, problem["task_id"], i))
            for p, problem in enumerate(problems) for i in range(n)]


def batches(rows: list[Trajectory], batch_size: int, whole_problems: bool = False) -> Iterator[list[Trajectory]]:
    """Consecutive batches of at most `batch_size` trajectories.

    `whole_problems` keeps each problem's trajectories in one batch (methods whose samples interact,
    e.g. LaDiR's diversity guidance among the samples of a question): problems are packed whole, and a
    problem with more than `batch_size` samples gets a batch of its own.
    """
    if not whole_problems:
        for start in range(0, len(rows), max(1, batch_size)):
            yield rows[start:start + max(1, batch_size)]
        return
    batch: list[Trajectory] = []
    for _, group in itertools.groupby(rows, key=lambda r: r.problem):
        members = list(group)
        if batch and len(batch) + len(members) > batch_size:
            yield batch
            batch = []
        batch += members
    if batch:
        yield batch


def sample_batched(problems: Sequence[dict], n: int, seed: int, batch_size: int,
                   run_batch: Callable[[list[Trajectory]], list[str]],
                   whole_problems: bool = False) -> list[list[str]]:
    """n completions per problem: `run_batch(trajectories)` writes one completion per trajectory, for
    batches filled across problems; the results come back grouped by problem, in sample order."""
    results: list[list[str | None]] = [[None] * n for _ in problems]
    for batch in batches(trajectories(problems, n, seed), batch_size, whole_problems):
        texts = run_batch(batch)
        if len(texts) != len(batch):
            raise RuntimeError(f"a batch of {len(batch)} trajectories returned {len(texts)} completions")
        for row, text in zip(batch, texts, strict=True):
            results[row.problem][row.index] = text
    return results  # type: ignore[return-value]


class RowNoise:
    """One random stream per batch row (a CPU `torch.Generator` each, so CPU and GPU draw the same numbers).

    Each call draws the next numbers of every row's own stream: a row's draws depend only on its seed
    and on the calls made so far, never on the other rows.
    """

    def __init__(self, seeds: Sequence[int], device: torch.device | str = "cpu"):
        self.seeds = [int(s) for s in seeds]
        self.generators = [torch.Generator().manual_seed(s) for s in self.seeds]
        self.device = torch.device(device)

    @classmethod
    def of(cls, rows: Sequence[Trajectory], device: torch.device | str = "cpu") -> RowNoise:
        return cls([r.seed for r in rows], device)

    def __len__(self) -> int:
        return len(self.generators)

    def stream(self, purpose: str) -> RowNoise:
        """Independent streams for another use (e.g. a method's answer tokens after its latents), so that
        how many numbers one use draws, which may depend on the batch, never shifts the other's."""
        salt = zlib.crc32(purpose.encode())
        return RowNoise([(seed ^ (salt * _MIX)) & _MASK for seed in self.seeds], self.device)

    def uniform(self, *shape: int) -> torch.Tensor:
        """(rows, *shape) uniforms in [0, 1)."""
        return torch.stack([torch.rand(shape, generator=g) for g in self.generators]).to(self.device)

    def normal(self, *shape: int) -> torch.Tensor:
        """(rows, *shape) standard normals."""
        return torch.stack([torch.randn(shape, generator=g) for g in self.generators]).to(self.device)


def draw_tokens(logits: torch.Tensor, temperature: float, uniforms: torch.Tensor | None = None,
                top_p: float = 1.0) -> torch.Tensor:
    """A token per row of (M, V) logits: argmax at temperature 0, else the inverse CDF of the tempered
    softmax (restricted to the top-p nucleus) at each row's uniform in `uniforms` (M,)."""
    if temperature == 0:
        return logits.argmax(-1)
    if uniforms is None:
        raise ValueError("sampling at temperature > 0 needs a uniform per row")
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    order = None
    if top_p < 1:
        probs, order = probs.sort(dim=-1, descending=True)
        # keep the smallest prefix of the sorted tokens whose mass reaches top_p
        probs = probs.masked_fill((probs.cumsum(-1) - probs) >= top_p, 0.0)
    cdf = probs.cumsum(-1)
    target = uniforms.to(cdf)[:, None] * cdf[:, -1:]  # scaled by the total: no renormalisation needed
    picked = torch.searchsorted(cdf, target, right=True).clamp_max(cdf.size(-1) - 1)
    # never land on a zero-probability token (a float tie at the CDF's top end)
    picked = torch.where(probs.gather(-1, picked) > 0, picked, probs.argmax(-1, keepdim=True))
    return (picked if order is None else order.gather(-1, picked)).squeeze(-1)

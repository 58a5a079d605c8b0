"""LaDiR's ODE sampler (paper §3.3 inference, §3.4 diversity guidance), a diffusers-style scheduler.

The reasoner predicts a velocity u(z_t, t); the scheduler owns the time grid and the update, so a
different solver (Heun, a non-uniform grid) can be swapped in without touching the reasoner:

    sampler.set_timesteps(n)
    z = sampler.initial_noise(shape)                 # z_1 ~ N(0, s^2 I)
    for t in sampler.timesteps:                      # 1 = noise ... 0 = clean
        z = sampler.step(reasoner_velocity(z, t), t, z)

Diversity guidance acts among the rows of one `step` call that share a group (the trajectories of
one question; a batch may hold several questions): each is pushed away from the others of its
group, strongly at first and not at all at t = 0.
"""

from __future__ import annotations

import torch


def diversity_force(z: torch.Tensor) -> torch.Tensor:
    """The paper's repulsive field over a batch of trajectories, one row each (any trailing shape).

    F(z_i) = 1/(n - 1) sum_{j != i} 2 (1 - d_ij^2 / sigma^2) exp(-d_ij^2 / sigma^2) (z_i - z_j),
    d_ij = ||z_i - z_j||_2, sigma = median_{i<j} d_ij (torch.median: the lower middle for an even
    count), divided by n - 1 so that a given gamma_max means the same push at k = 10 and k = 100 (the
    raw sum grows with n). Zero for a single row or coincident rows. F is the gradient of
    sum_j d_ij^2 exp(-d_ij^2 / sigma^2), so it drives every pairwise distance toward sigma: it pushes
    near-duplicate trajectories apart (d < sigma) and pulls outliers in a little (d > sigma).
    """
    n = z.size(0)
    flat = z.reshape(n, -1)
    if n < 2:
        return torch.zeros_like(z)
    diff = flat[:, None, :] - flat[None, :, :]  # (n, n, D): z_i - z_j
    sq = diff.pow(2).sum(-1)  # d_ij^2
    i, j = torch.triu_indices(n, n, offset=1, device=z.device)
    sigma2 = sq[i, j].sqrt().median().pow(2)
    if sigma2 <= 0:
        return torch.zeros_like(z)
    ratio = sq / sigma2
    weight = 2 * (1 - ratio) * torch.exp(-ratio)  # the j = i term has diff 0, so it drops out
    return (weight[:, :, None] * diff).sum(1).reshape_as(z) / (n - 1)


def grouped_diversity_force(z: torch.Tensor, groups: torch.Tensor | None) -> torch.Tensor:
    """`diversity_force` within each group of rows (one question's trajectories), zero across groups."""
    if groups is None:
        return diversity_force(z)
    force = torch.zeros_like(z)
    for group in groups.unique():
        rows = (groups == group).nonzero().squeeze(1)
        force[rows] = diversity_force(z[rows])
    return force


class FlowMatchEuler:
    """Euler steps of the flow-matching ODE from t = 1 (noise) to t = 0 (clean latent).

    z_{t - dt} = z_t - dt * u(z_t, t)                  (paper: z_{t-Δt} = z_t - Δt u_θ(z_t, t))

    With diversity guidance the repulsion is added to the same update, scaled by the same dt:

    z_{t - dt} = z_t - dt * u(z_t, t) + dt * gamma_t * F(z_t),   gamma_t = gamma_max * t

    i.e. the guided velocity is u - gamma_t F (the paper adds gamma_t F to the model's prediction,
    as classifier-free guidance adds its correction). Guidance is off when gamma_max == 0 or a step
    sees a single trajectory.
    """

    def __init__(self, init_noise: float = 1.0, gamma_max: float = 0.0):
        self.init_noise = init_noise  # s: z_1 ~ N(0, s^2 I); s > 1 widens the start (paper: 2 helps, > 3 hurts)
        self.gamma_max = gamma_max
        self.timesteps: list[float] = []
        self.set_timesteps(10)

    def set_timesteps(self, num_steps: int, t_start: float = 1.0) -> None:
        """`num_steps` equal steps from `t_start` (1 = pure noise) to 0."""
        if num_steps < 1:
            raise ValueError("num_steps must be >= 1")
        grid = [t_start * (num_steps - k) / num_steps for k in range(num_steps + 1)]  # t_start ... 0 = clean
        self.timesteps = grid[:-1]
        self._next = dict(zip(grid[:-1], grid[1:], strict=True))

    def initial_noise(self, shape: tuple[int, ...], device=None, dtype=None) -> torch.Tensor:
        return self.init_noise * torch.randn(shape, device=device, dtype=dtype)

    def step(self, velocity: torch.Tensor, t: float, sample: torch.Tensor,
             groups: torch.Tensor | None = None) -> torch.Tensor:
        """One Euler step; `groups` (B,) names each row's question (default: all one question)."""
        dt = t - self._next[t]
        update = sample - dt * velocity  # z_{t-dt} = z_t - dt u(z_t, t)
        gamma_t = self.gamma_max * t  # gamma_t = gamma_max * t: strong early, fading to 0
        if gamma_t > 0 and sample.size(0) > 1:
            update = update + dt * gamma_t * grouped_diversity_force(sample, groups)
        return update

    @staticmethod
    def predicted_clean(velocity: torch.Tensor, t: float, sample: torch.Tensor) -> torch.Tensor:
        """z_0 estimate from one velocity: z_t = (1-t) z_0 + t eps and u = eps - z_0 give z_0 = z_t - t u."""
        return sample - t * velocity

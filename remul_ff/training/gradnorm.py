"""GradNorm (Chen et al. 2018) for the two REMUL losses: adapts alpha (task) and beta (equivariance).

At each step, with ``g_i = ||∇_W L_i||`` at the last shared layer ``W`` and weights ``w_i``:

* ``G_i = w_i g_i`` and ``Ḡ`` their mean;
* ``r_i = (L_i / L_i(0)) / mean_j(L_j / L_j(0))``, the relative inverse training rate;
* the GradNorm loss ``Σ_i |G_i - Ḡ r_i^a|`` with the target held constant and ``a`` the
  restoring-force exponent; its gradient with respect to ``w_i`` is ``sign(G_i - target_i) g_i``,
  applied by Adam;
* then the weights are clamped positive and renormalised so that ``Σ w_i = 2`` (the number of
  losses), as in the paper.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class GradNorm:
    """Adaptive weights ``(alpha, beta)`` for ``alpha * L_task + beta * L_equi``."""

    def __init__(
        self, alpha: float = 1.0, beta: float = 1.0, restoring: float = 1.5, lr: float = 0.025, device: torch.device | str = "cpu"
    ) -> None:
        total = alpha + beta
        # On the losses' device: an update then reads nothing back to the host (one sync a step on a GPU).
        self.weights = torch.tensor([alpha, beta], dtype=torch.float64, device=device) * 2.0 / total
        self.weights.requires_grad_(True)
        self.restoring = restoring
        self.optimizer = torch.optim.Adam([self.weights], lr=lr)
        self.initial_losses: torch.Tensor | None = None

    @property
    def alpha(self) -> float:
        """Current weight of the task loss."""
        return float(self.weights.detach()[0])

    @property
    def beta(self) -> float:
        """Current weight of the equivariance loss."""
        return float(self.weights.detach()[1])

    def weighted(self, task: torch.Tensor, equi: torch.Tensor) -> torch.Tensor:
        """``alpha * task + beta * equi`` with the weights as tensors (no read-back), in the losses' dtype."""
        alpha, beta = self.weights.detach().to(task.dtype).unbind()
        return alpha * task + beta * equi

    def update(
        self, losses: list[torch.Tensor], shared: torch.Tensor, reduce: Callable[[torch.Tensor], torch.Tensor] = lambda t: t
    ) -> None:
        """One GradNorm step from the two unweighted losses and the shared layer's weight.

        Args:
            losses: ``[L_task, L_equi]`` (this process's share of them).
            shared: Weight of the last shared layer.
            reduce: In-place sum over data-parallel ranks, so that gradient norms and loss ratios
                are those of the global batch and the weights stay identical on every rank.
        """
        grads = [reduce(torch.autograd.grad(loss, shared, retain_graph=True)[0].detach().clone()) for loss in losses]
        norms = torch.stack([g.norm() for g in grads]).double()
        values = reduce(torch.stack([loss.detach() for loss in losses]).double())
        if self.initial_losses is None:
            self.initial_losses = values.clamp_min(1e-12)
        ratios = values / self.initial_losses
        target = (self.weights.detach() * norms).mean() * (ratios / ratios.mean()) ** self.restoring
        weighted = self.weights.detach() * norms
        self.optimizer.zero_grad()
        self.weights.grad = torch.sign(weighted - target) * norms
        self.optimizer.step()
        with torch.no_grad():
            self.weights.clamp_(min=1e-4)
            self.weights.mul_(2.0 / self.weights.sum())

    def state_dict(self) -> dict:
        """Everything needed to resume exactly."""
        return {
            "weights": self.weights.detach().clone(),
            "optimizer": self.optimizer.state_dict(),
            "initial_losses": self.initial_losses,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore from :meth:`state_dict`."""
        with torch.no_grad():
            self.weights.copy_(state["weights"])
        self.optimizer.load_state_dict(state["optimizer"])
        initial = state["initial_losses"]
        self.initial_losses = None if initial is None else initial.to(self.weights.device)

"""The REMUL transformer: an unconstrained attention model over the atoms of each molecule.

Design, in the order the data flows:

* Edges come from the batched radius graph. Each edge is described by a radial basis of its
  length **and the raw Cartesian components of the relative vector** ``(r_j - r_i) / r_max``.
  The raw components are what make the model unconstrained: nothing forces it to be rotation
  invariant, so it must learn equivariance from the REMUL loss (or from augmentation).
* Relative vectors give exact translation invariance; sums over neighbours and atoms give exact
  permutation equivariance.
* Attention of atom ``i`` over its neighbours ``j`` is a softmax in which every term is weighted
  by the smooth cutoff envelope and a constant "null" term keeps the denominator positive:
  ``a_ij = env_ij exp(s_ij) / (1 + Σ_k env_ik exp(s_ik))``. An atom entering the cutoff starts
  with zero weight and zero slope, so energy and forces are continuous across ``r_max``.
* Pre-LayerNorm blocks (attention, then a feed-forward network), then an MLP per atom gives
  ``y_i``; :class:`~remul_ff.models.common.AtomicEnergyHead` turns it into eV with per-element
  scale, shift and E0. The model predicts energies only; forces come from
  :func:`remul_ff.models.forces.predict`.
* For inference (:meth:`REMULTransformer.for_inference`, used by the calculator, the MD engine and
  the exporters) the edge MLP's last linear layer is folded into every block's edge projection (two
  linear maps in a row are one) and the blocks' projections are made in one matrix product: an
  eighth fewer multiply-adds per atom pair and fewer kernels, with the same energies to rounding
  (what it gains where: ``benchmarks/results/inference_merge.md``).
* With ``direct_forces: true`` a second head on the same trunk predicts forces directly
  (:class:`DirectForceHead`, no autograd): the cheap forces of multiple time stepping
  (:func:`remul_ff.md.integrators.multiple_time_step`). It is as unconstrained as the energy, so
  REMUL's equivariance loss covers it too. :func:`with_direct_forces` makes the model return them.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from remul_ff.data.neighbors import MoleculeLayout, edge_vectors
from remul_ff.errors import RemulError
from remul_ff.models.common import RADIAL_BASES, AtomwiseEnergyModel, polynomial_envelope, scatter_sum
from remul_ff.schema import AT_LEAST_1, AT_LEAST_1_OR_NULL, DISTANCE, ENVELOPE_EXPONENT, bounded, one_of


@dataclass
class TransformerConfig:
    """Hyperparameters of :class:`REMULTransformer` (the ``model`` section of a training config).

    Attributes:
        width: Feature size per atom.
        depth: Number of attention blocks.
        heads: Attention heads; ``width`` must be divisible by it.
        r_max: Cutoff radius in Å.
        num_radial: Size of the radial basis.
        radial_basis: ``"bessel"`` or ``"gaussian"``.
        envelope_p: Exponent of the polynomial cutoff envelope.
        ffn_multiplier: Hidden size of the feed-forward network relative to ``width``.
        edge_width: Size of the edge features that modulate keys and values (``null``: ``width``).
            Edge work dominates the cost (about 8 edges per atom), so a smaller value is faster.
        direct_forces: Add a head that predicts forces without autograd (:class:`DirectForceHead`),
            for multiple time stepping; the energy and its forces are unchanged by it.
        direct_forces_layers: Layers of the head's pair network that gives each bond's force
            coefficient (1: one product and a linear read-out; each more adds a ``width x width`` layer).
        angular_degree: With ``L >= 1``, the edge MLP's hidden features are multiplied by a learned
            linear map of the bond direction's Cartesian monomials up to degree ``L`` (``x, y, z, x², xy,
            ...``): a radial x angular product, as in ACE's density basis, but with no coupling to
            invariants, so the model stays unconstrained. ``0``: the direction enters the MLP only raw.
    """

    width: int = bounded(128, *AT_LEAST_1)
    depth: int = bounded(3, *AT_LEAST_1)
    heads: int = bounded(8, *AT_LEAST_1)
    r_max: float = bounded(5.0, *DISTANCE)
    num_radial: int = bounded(16, *AT_LEAST_1)
    radial_basis: str = one_of(*RADIAL_BASES)
    envelope_p: int = bounded(6, *ENVELOPE_EXPONENT)
    ffn_multiplier: int = bounded(2, *AT_LEAST_1)
    edge_width: int | None = bounded(None, *AT_LEAST_1_OR_NULL)
    direct_forces: bool = False
    direct_forces_layers: int = bounded(1, *AT_LEAST_1)
    angular_degree: int = bounded(0, lambda v: 0 <= v <= 4, "an integer from 0 to 4")

    @property
    def edge_features(self) -> int:
        """Size of the edge features."""
        return self.edge_width or self.width


class EdgeEncoder(nn.Module):
    """Edge features from the radial basis and the raw (non-invariant) relative vector.

    ``mlp`` is (linear, SiLU, linear); with ``angular_degree > 0`` its hidden features are multiplied by
    ``angular(monomials of the unit vector)`` before the last linear layer, which therefore stays the
    layer that :meth:`REMULTransformer.for_inference` folds into the blocks.
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.r_max = config.r_max
        self.envelope_p = config.envelope_p
        self.basis = RADIAL_BASES[config.radial_basis](config.r_max, config.num_radial)
        self.mlp = nn.Sequential(
            nn.Linear(config.num_radial + 3, config.edge_features), nn.SiLU(), nn.Linear(config.edge_features, config.edge_features)
        )
        self.angular_degree = config.angular_degree
        degree = config.angular_degree
        self.angular = nn.Linear(num_monomials(degree), config.edge_features) if degree else None

    def forward(self, edge_vec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[E, edge_features]`` edge features and ``[E]`` envelope values."""
        r = torch.linalg.norm(edge_vec, dim=-1)
        envelope = polynomial_envelope(r, self.r_max, self.envelope_p)
        hidden = self.mlp[1](self.mlp[0](torch.cat([self.basis(r), edge_vec / self.r_max], dim=-1)))
        if self.angular is not None:
            hidden = hidden * self.angular(cartesian_monomials(edge_vec / r[:, None], self.angular_degree))
        return self.mlp[2](hidden), envelope


def num_monomials(degree: int) -> int:
    """How many monomials of ``x, y, z`` of degree 1 to ``degree`` there are."""
    return sum((d + 1) * (d + 2) // 2 for d in range(1, degree + 1))


def cartesian_monomials(unit: torch.Tensor, degree: int) -> torch.Tensor:
    """``[E, num_monomials(degree)]``: every monomial of the components of ``unit`` ``[E, 3]`` of degree 1 to ``degree``.

    Degree ``d`` is built from degree ``d - 1`` times one component whose index is at least the
    largest index already in the monomial, so each monomial appears once.
    """
    terms = [unit]
    last = [unit[:, a : a + 1] for a in range(3)]  # per index a: the monomials of the last degree whose largest index is a
    for _ in range(1, degree):
        last = [torch.cat(last[: a + 1], dim=-1) * unit[:, a : a + 1] for a in range(3)]
        terms.extend(last)
    return torch.cat(terms, dim=-1)


class AttentionBlock(nn.Module):
    """Pre-LayerNorm neighbourhood attention with edge-modulated keys and values, then an FFN."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.heads, self.head_dim = config.heads, config.width // config.heads
        self.norm_attn = nn.LayerNorm(config.width)
        self.qkv = nn.Linear(config.width, 3 * config.width)
        self.edge_proj = nn.Linear(config.edge_features, 2 * config.width + config.heads)
        self.out = nn.Linear(config.width, config.width)
        self.norm_ffn = nn.LayerNorm(config.width)
        hidden = config.ffn_multiplier * config.width
        self.ffn = nn.Sequential(nn.Linear(config.width, hidden), nn.SiLU(), nn.Linear(hidden, config.width))

    def forward(self, h: torch.Tensor, edge_terms: torch.Tensor, envelope: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """Update atom features ``h`` ``[n, width]`` from ``edge_terms = self.edge_proj(edge features)``."""
        n, (centre, neighbour) = h.shape[0], edge_index
        q, k, v = self.qkv(self.norm_attn(h)).view(n, 3, self.heads, self.head_dim).unbind(1)
        edge_k, edge_v, bias = edge_terms.split([h.shape[1], h.shape[1], self.heads], dim=-1)
        # index_select, not k[neighbour]: its backward is a fast index_add instead of index_put.
        keys = k.index_select(0, neighbour) * edge_k.view(-1, self.heads, self.head_dim)
        values = v.index_select(0, neighbour) * edge_v.view(-1, self.heads, self.head_dim)
        scores = (q.index_select(0, centre) * keys).sum(-1) / math.sqrt(self.head_dim) + bias
        weights = envelope_softmax(scores, envelope, centre, n)
        message = scatter_sum(weights[..., None] * values, centre, n).reshape(n, -1)
        h = h + self.out(message)
        return h + self.ffn(self.norm_ffn(h))


def envelope_softmax(scores: torch.Tensor, envelope: torch.Tensor, centre: torch.Tensor, n: int) -> torch.Tensor:
    """``env_ij exp(s_ij) / (1 + Σ_k env_ik exp(s_ik))`` per centre atom and head, computed stably.

    The shift by the per-centre maximum (at least 0, the null term's score) cancels exactly;
    it is detached because it does not change the value. Pairs with a zero envelope (beyond
    ``r_max``, present when every pair of a molecule is used) get a score of ``-inf``: exactly zero
    weight and gradient, and no say in the shift.
    """
    scores = scores.masked_fill((envelope <= 0)[:, None], -math.inf)
    shift = torch.zeros(n, scores.shape[1], dtype=scores.dtype, device=scores.device)
    shift = shift.scatter_reduce(0, centre[:, None].expand_as(scores), scores.detach(), reduce="amax", include_self=True)
    numerator = envelope[:, None] * torch.exp(scores - shift.index_select(0, centre))
    denominator = torch.exp(-shift) + scatter_sum(numerator, centre, n)
    return numerator / denominator.index_select(0, centre)


class DirectForceHead(nn.Module):
    """Forces without autograd: ``F_i = s_Zi Σ_j env_ij c_ij (r_j - r_i) / r_max``, minus the molecule's mean.

    ``c_ij`` is a small network of the final features of ``i`` and ``j`` and of the edge's features.
    Those carry raw Cartesian components, so nothing makes ``F`` rotate with the molecule: it learns
    to, like the energy, from the REMUL loss. Building it on bond vectors (as a pairwise force would
    be) gives it the right form to learn; removing each molecule's mean force conserves momentum
    exactly, as the conservative forces of a translation-invariant energy do.
    """

    def __init__(self, config: TransformerConfig, num_elements: int, scale: float) -> None:
        super().__init__()
        self.r_max = config.r_max
        self.norm = nn.LayerNorm(config.width)
        self.atom = nn.Linear(config.width, 2 * config.width)
        self.edge = nn.Linear(config.edge_features, config.width)
        layers = (config.direct_forces_layers - 1) * [config.width]
        self.hidden = nn.Sequential(*(module for width in layers for module in (nn.Linear(width, width), nn.SiLU())))  # empty: 1 layer
        self.out = nn.Linear(config.width, 1)
        self.scale = nn.Parameter(torch.full((num_elements,), float(scale)))

    def forward(self, h: torch.Tensor, edge_data: tuple, edge_index: torch.Tensor, species, molecule_index) -> torch.Tensor:
        """``[n, 3]`` forces in eV/Å, in the features' dtype, from ``edge_data = (edge vectors, edge features, envelope)``."""
        (edge_vec, edges, envelope), n, (centre, neighbour) = edge_data, h.shape[0], edge_index
        a, b = self.atom(self.norm(h)).chunk(2, dim=-1)
        pair = nn.functional.silu(a.index_select(0, centre) * b.index_select(0, neighbour) * self.edge(edges))
        c = self.out(self.hidden(pair)).squeeze(-1)
        forces = scatter_sum((envelope * c)[:, None] * edge_vec / self.r_max, centre, n) * self.scale[species][:, None]
        return forces - molecule_mean(forces, molecule_index)


def molecule_mean(values: torch.Tensor, molecule_index: torch.Tensor | None) -> torch.Tensor:
    """Each row's molecule mean of ``values`` ``[n, 3]``, per row (sized by atoms: no host sync for the count).

    ``molecule_index`` ``None``: one molecule. (The exported programs use that: Inductor's parallel CPU
    code for a scatter-add over a constant index fails to compile, torch 2.13.)
    """
    if molecule_index is None:
        return values.mean(0, keepdim=True).expand_as(values)
    n = values.shape[0]
    sums, counts = scatter_sum(values, molecule_index, n), scatter_sum(torch.ones_like(values[:, 0]), molecule_index, n)
    return (sums / counts.clamp(min=1)[:, None]).index_select(0, molecule_index)


class REMULTransformer(AtomwiseEnergyModel):
    """Energy-only transformer potential; see the module docstring for the design."""

    def __init__(self, config: TransformerConfig, elements: list[int], e0s: list[float], scale: float = 1.0, shift: float = 0.0) -> None:
        super().__init__()
        if config.width % config.heads:
            raise ValueError(f"model.width ({config.width}) must be divisible by model.heads ({config.heads}).")
        self.config = config
        self.r_max = config.r_max
        self.init_common(config.width, elements, e0s, scale, shift)
        self.edge_encoder = EdgeEncoder(config)
        self.blocks = nn.ModuleList(AttentionBlock(config) for _ in range(config.depth))
        self.readout_norm = nn.LayerNorm(config.width)
        self.force_head = DirectForceHead(config, len(elements), scale) if config.direct_forces else None
        self.merged_edge_proj: nn.Linear | None = None  # set in the inference copy only
        self.returns_direct_forces = False  # with_direct_forces() makes a view that sets it

    def forward(
        self, positions: torch.Tensor, atomic_numbers: torch.Tensor, molecule_index: torch.Tensor, layout: MoleculeLayout | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``[n]`` float64 atomic energies in eV (interaction part plus E0); with
        ``returns_direct_forces`` also the ``[n, 3]`` direct forces. ``layout``: the batch's, if known."""
        edge_index = self.pairs(positions, molecule_index, layout)[0]
        if not self.returns_direct_forces:
            return self.energies_on_pairs(positions, atomic_numbers, edge_index)
        return self.energies_and_direct_forces(positions, atomic_numbers, edge_index, molecule_index)

    def energies_on_pairs(self, positions: torch.Tensor, atomic_numbers: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """``[n]`` atomic energies with the interacting pairs given (``edge_index`` ``[2, E]``)."""
        species, h, _ = self.trunk(positions, atomic_numbers, edge_index)
        return self.atomic_energies(self.readout_norm(h), species)

    def energies_and_direct_forces(
        self, positions: torch.Tensor, atomic_numbers: torch.Tensor, edge_index: torch.Tensor, molecule_index: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``[n]`` atomic energies and ``[n, 3]`` direct forces from one pass of the trunk (``molecule_index``
        ``None``: all atoms are one molecule)."""
        species, h, edge_data = self.trunk(positions, atomic_numbers, edge_index)
        forces = self.force_head(h, edge_data, edge_index, species, molecule_index)
        return self.atomic_energies(self.readout_norm(h), species), forces

    def trunk(self, positions: torch.Tensor, atomic_numbers: torch.Tensor, edge_index: torch.Tensor) -> tuple:
        """``(species, final atom features, (edge vectors, edge features, envelope))``."""
        species = self.elements(atomic_numbers)
        edge_vec = edge_vectors(positions, edge_index)
        edges, envelope = self.edge_encoder(edge_vec)
        h = self.embedding(species)
        for block, edge_terms in zip(self.blocks, self.edge_terms(edges)):
            h = block(h, edge_terms, envelope, edge_index)
        return species, h, (edge_vec, edges, envelope)

    def edge_terms(self, edges: torch.Tensor) -> list[torch.Tensor]:
        """Each block's edge projection of ``edges``; the inference copy makes them in one product."""
        if self.merged_edge_proj is None:
            return [block.edge_proj(edges) for block in self.blocks]
        return list(self.merged_edge_proj(edges).chunk(len(self.blocks), dim=-1))

    def for_inference(self) -> REMULTransformer:
        """A frozen copy in eval mode whose edge projections absorb the edge MLP's last layer.

        Each block computes ``P (W e + b) + c`` from the edge MLP's hidden features ``e``; the copy
        computes ``(P W) e + (P b + c)``, merged once in float64, for all blocks in one product
        (``merged_edge_proj``). Its ``state_dict`` has a different layout, so it is not a model file;
        the original model is left untouched.
        """
        if self.merged_edge_proj is not None:
            return self
        folded = copy.deepcopy(self).eval().requires_grad_(False)
        last = folded.edge_encoder.mlp[2]
        folded.edge_encoder.mlp[2] = nn.Identity()
        projection = torch.cat([block.edge_proj.weight for block in folded.blocks])  # all blocks' P, stacked
        offset = torch.cat([block.edge_proj.bias for block in folded.blocks])
        for block in folded.blocks:
            del block.edge_proj  # now inside merged_edge_proj
        folded.merged_edge_proj = fold_linear(projection, offset, last)
        if folded.force_head is not None:  # its edge projection reads the edge MLP's output too
            head = folded.force_head
            head.edge = fold_linear(head.edge.weight, head.edge.bias, last)
        return folded


def fold_linear(weight: torch.Tensor, bias: torch.Tensor, inner: nn.Linear) -> nn.Linear:
    """One frozen linear map equal to ``weight @ inner(x) + bias``, merged in float64."""
    merged = nn.Linear(inner.in_features, weight.shape[0], dtype=torch.float64, device=inner.weight.device)
    with torch.no_grad():
        merged.weight.copy_(weight.double() @ inner.weight.double())
        merged.bias.copy_(weight.double() @ inner.bias.double() + bias.double())
    return merged.to(dtype=inner.weight.dtype).requires_grad_(False)


def has_direct_forces(model: nn.Module) -> bool:
    """Whether ``model`` (or a view of it) has a direct-force head."""
    return getattr(model, "force_head", None) is not None


def with_direct_forces(model: nn.Module) -> nn.Module:
    """A shallow view of ``model`` (same parameters) whose forward returns ``(atomic energies, direct forces)``.

    A view, like :func:`~remul_ff.models.common.with_fixed_pairs`, so that one module call (which
    ``torch.compile`` and DDP wrap) gives both; the model itself keeps returning energies alone.
    """
    if not has_direct_forces(model):
        raise RemulError("this model has no direct-force head; train one with model.direct_forces: true.")
    view = copy.copy(model)
    view.returns_direct_forces = True
    return view

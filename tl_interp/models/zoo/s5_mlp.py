"""``s5-mlp``: a one-hidden-layer network that learns S5 composition ``(x, y) -> x * y``.

The toy of Chughtai, Chan & Nanda 2023 ("A Toy Model of Universality", arXiv:2302.03025),
written as a TransformerLens ``HookedRootModule`` so every tl_interp hook works on it:

    e_x = W_x[x]                     hook_embed_x   (batch, d_embed)
    e_y = W_y[y]                     hook_embed_y   (batch, d_embed)
    pre = concat(e_x, e_y) @ W       hook_pre       (batch, d_hidden)
    h   = ReLU(pre)                  hook_hidden    (batch, d_hidden)
    logits = h @ W_U                 hook_logits    (batch, d_vocab)

No biases, as in the paper, so the learned maps are linear in the one-hot inputs and
project cleanly onto representation subspaces. Labels follow ``groups``' convention:
element indices are canonical (lexicographic) and ``(x * y)(i) = x(y(i))``.
"""

from dataclasses import asdict, dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformer_lens import HookedRootModule  # a public top-level name on TL 3.9 and 4.x
from transformer_lens.hook_points import HookPoint

from tl_interp._checks import checked
from tl_interp.errors import SelectionError
from tl_interp.models.zoo.groups import S5_ORDER, multiplication_table

__all__ = [
    "S5MLPConfig",
    "S5MLP",
    "all_pairs",
    "train_test_split",
    "accuracy_and_loss",
    "QUALITY_THRESHOLDS",
]

# Held-out accuracy the packaged model must reach (tests check it; the card records it).
# 0.99 of 5760 held-out pairs allows at most 57 errors; chance is 1/120.
QUALITY_THRESHOLDS: dict[str, float] = {"min_test_accuracy": 0.99}


@dataclass(frozen=True)
class S5MLPConfig:
    """Sizes of an ``S5MLP``.

    Args:
        d_vocab: number of group elements (inputs and output classes).
        d_embed: width of each input embedding.
        d_hidden: number of ReLU neurons.
    """

    d_vocab: int = S5_ORDER
    d_embed: int = 64
    d_hidden: int = 128

    def to_dict(self) -> dict[str, int]:
        """The config as a plain dict (for model cards)."""
        return asdict(self)


class S5MLP(HookedRootModule):
    """Embed x and y, one ReLU layer on their concatenation, unembed to group elements.

    Args:
        cfg: the sizes; defaults are those of the bundled ``s5-mlp``.

    Example:
        >>> model = S5MLP(S5MLPConfig())
        >>> model(torch.tensor([[0, 5]])).shape
        torch.Size([1, 120])
    """

    def __init__(self, cfg: S5MLPConfig = S5MLPConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        # Kaiming-style fan-in scaling; the trainer seeds torch before building the model.
        self.W_x = nn.Parameter(torch.randn(cfg.d_vocab, cfg.d_embed) / cfg.d_embed**0.5)
        self.W_y = nn.Parameter(torch.randn(cfg.d_vocab, cfg.d_embed) / cfg.d_embed**0.5)
        self.W = nn.Parameter(
            torch.randn(2 * cfg.d_embed, cfg.d_hidden) / (2 * cfg.d_embed) ** 0.5
        )
        self.W_U = nn.Parameter(torch.randn(cfg.d_hidden, cfg.d_vocab) / cfg.d_hidden**0.5)
        self.hook_embed_x = HookPoint()
        self.hook_embed_y = HookPoint()
        self.hook_pre = HookPoint()
        self.hook_hidden = HookPoint()
        self.hook_logits = HookPoint()
        self.setup()

    @checked
    def forward(self, pairs: Int[Tensor, "batch 2"]) -> Float[Tensor, "batch d_vocab"]:
        """Logits over the product ``x * y`` for each row ``(x, y)`` of ``pairs``.

        Args:
            pairs: element indices, column 0 is ``x`` (left factor), column 1 is ``y``.

        Returns:
            Logits ``(batch, 120)``; the answer is ``multiplication_table()[x, y]``.
        """
        if pairs.numel() and (pairs.min() < 0 or pairs.max() >= self.cfg.d_vocab):
            raise SelectionError(
                f"S5MLP input holds element indices in [{int(pairs.min())}, "
                f"{int(pairs.max())}]; expected indices in [0, {self.cfg.d_vocab - 1}]"
            )
        e_x = self.hook_embed_x(self.W_x[pairs[:, 0]])
        e_y = self.hook_embed_y(self.W_y[pairs[:, 1]])
        pre = self.hook_pre(torch.cat([e_x, e_y], dim=-1) @ self.W)
        hidden = self.hook_hidden(torch.relu(pre))
        return self.hook_logits(hidden @ self.W_U)


@checked
def all_pairs() -> tuple[Int[Tensor, "14400 2"], Int[Tensor, "14400"]]:
    """Every pair ``(x, y)`` of S5 elements (row-major: ``row = 120 * x + y``) and ``x * y``.

    Returns:
        ``(pairs, labels)``.

    Example:
        >>> pairs, labels = all_pairs()
        >>> pairs[121].tolist(), int(labels[0])
        ([1, 1], 0)
    """
    idx = torch.arange(S5_ORDER)
    pairs = torch.cartesian_prod(idx, idx)
    return pairs, multiplication_table().reshape(-1)


@checked
def train_test_split(
    seed: int, train_fraction: float
) -> tuple[Int[Tensor, "n_train"], Int[Tensor, "n_test"]]:
    """A seeded random split of the 14400 pair indices into train and held-out test.

    Args:
        seed: seeds the permutation (the model card records it).
        train_fraction: share of pairs used for training, in (0, 1).

    Returns:
        ``(train_idx, test_idx)``, disjoint, together all of ``range(14400)``, each sorted.

    Example:
        >>> train, test = train_test_split(0, 0.5)
        >>> len(train) + len(test)
        14400
    """
    n = S5_ORDER * S5_ORDER
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_train = int(round(train_fraction * n))
    return perm[:n_train].sort().values, perm[n_train:].sort().values


@checked
def accuracy_and_loss(
    model: S5MLP, pairs: Int[Tensor, "batch 2"], labels: Int[Tensor, "batch"]
) -> tuple[float, float]:
    """Top-1 accuracy and mean cross-entropy of ``model`` on labelled pairs.

    Args:
        model: the network.
        pairs: ``(x, y)`` rows.
        labels: the index of ``x * y`` for each row.

    Returns:
        ``(accuracy, loss)``, accuracy in [0, 1], loss in nats.

    Example:
        >>> pairs, labels = all_pairs()
        >>> acc, loss = accuracy_and_loss(S5MLP(), pairs[:10], labels[:10])
    """
    with torch.no_grad():
        logits = model(pairs)
    acc = (logits.argmax(-1) == labels).double().mean()
    loss = torch.nn.functional.cross_entropy(logits.double(), labels)
    return float(acc), float(loss)

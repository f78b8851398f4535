"""Synthetic tasks of the experiments: batches drawn from a seeded torch.Generator.

Token tasks return (inputs [B, T] int64, targets [B, T] int64, mask [B, T] bool): the model
reads inputs[:, :t+1] and is scored on targets[:, t] where mask[:, t]. The regression task
returns float inputs/targets instead (see InContextRegression).

- Parity, ModularAddition, PermutationComposition: state tracking (Grazzi et al.; Siems et al.):
  the target at every position is the running parity / sum mod m / composed permutation of the
  prefix, so a model must carry a state through the whole sequence; trained short and tested
  longer, they measure length extrapolation.
- MultiQueryAssociativeRecall (Zoology's MQAR): key-value pairs, then queries of those keys
  scattered over the rest of the sequence; the target at a query is its key's value.
- InContextRegression: pairs (x_i, y_i = W x_i) with a fresh W per sequence; predict y_i from x_i
  and the earlier pairs (test-time regression).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch


def answer_only(y: torch.Tensor) -> torch.Tensor:
    """The mask that scores the last position only (the sequence's answer)."""
    mask = torch.zeros(y.shape, dtype=torch.bool)
    mask[:, -1] = True
    return mask


@dataclass(frozen=True)
class Parity:
    """inputs bits; target[t] = XOR of inputs[0..t]. With `answer_only` only the last position is
    scored (Grazzi et al. section 5.1 after Delétang et al.: one answer per sequence)."""

    answer_only: bool = False

    @property
    def name(self) -> str:
        return "parity_answer" if self.answer_only else "parity"

    @property
    def vocab_in(self) -> int:
        return 2

    @property
    def vocab_out(self) -> int:
        return 2

    def batch(self, gen: torch.Generator, batch: int, length: int):
        x = torch.randint(0, 2, (batch, length), generator=gen)
        y = x.cumsum(1) % 2
        return x, y, answer_only(y) if self.answer_only else torch.ones(batch, length, dtype=torch.bool)


@dataclass(frozen=True)
class ModularAddition:
    """inputs in [0, m); target[t] = (inputs[0] + ... + inputs[t]) mod m."""

    modulus: int = 3

    @property
    def name(self) -> str:
        return f"mod{self.modulus}"

    @property
    def vocab_in(self) -> int:
        return self.modulus

    @property
    def vocab_out(self) -> int:
        return self.modulus

    def batch(self, gen: torch.Generator, batch: int, length: int):
        x = torch.randint(0, self.modulus, (batch, length), generator=gen)
        return x, x.cumsum(1) % self.modulus, torch.ones(batch, length, dtype=torch.bool)


class PermutationComposition:
    """inputs index permutations of S_n (of A_n, the even ones, with `alternating`); target[t]
    indexes p_t ∘ ... ∘ p_0 (p_0 applied first). S_3 is the smallest non-abelian group (it needs
    more than reflections about one axis); A_5 and S_5 are not solvable, the hardest case for any
    fixed-depth parallel model (DeltaProduct needs n_h >= 2 Householder steps per token there)."""

    def __init__(self, n: int = 3, alternating: bool = False):
        self.n, self.alternating = n, alternating
        self.perms = [p for p in itertools.permutations(range(n))
                      if not alternating or _is_even(p)]
        index = {p: i for i, p in enumerate(self.perms)}
        # compose[a, b] = index of perms[a] ∘ perms[b] (apply b, then a)
        self.compose = torch.tensor(
            [[index[tuple(pa[pb[i]] for i in range(n))] for pb in self.perms] for pa in self.perms])

    @property
    def name(self) -> str:
        return f"{'A' if self.alternating else 'S'}{self.n}"

    @property
    def vocab_in(self) -> int:
        return len(self.perms)

    @property
    def vocab_out(self) -> int:
        return len(self.perms)

    def batch(self, gen: torch.Generator, batch: int, length: int):
        x = torch.randint(0, self.vocab_in, (batch, length), generator=gen)
        y = torch.empty_like(x)
        acc = x[:, 0]
        y[:, 0] = acc
        for t in range(1, length):  # data generation, O(T) table lookups per batch
            acc = self.compose[x[:, t], acc]
            y[:, t] = acc
        return x, y, torch.ones(batch, length, dtype=torch.bool)


def _is_even(p: tuple[int, ...]) -> bool:
    inversions = sum(p[i] > p[j] for i in range(len(p)) for j in range(i + 1, len(p)))
    return inversions % 2 == 0


@dataclass(frozen=True)
class ModularArithmetic:
    """An arithmetic expression over the numbers 0..m-1 with +, -, * (mod m), then "=" whose
    target is the expression's value: the answer, the only scored position (Grazzi et al. section 5.1,
    after Delétang et al.). Without brackets the expression is evaluated left to right
    (a regular language: a running value mod m); with brackets every compound operand is
    bracketed, e.g. "( 2 * ( 3 - 1 ) ) + 4 =", so the tree fixes the value. An expression has odd
    length; when the requested length leaves an even number of tokens a pad token opens it."""

    modulus: int = 5
    brackets: bool = False

    PLUS, MINUS, TIMES, OPEN, CLOSE, EQUALS, PAD = range(7)  # offsets after the m numbers

    @property
    def name(self) -> str:
        return f"mod{self.modulus}_arith{'_brackets' if self.brackets else ''}"

    @property
    def vocab_in(self) -> int:
        return self.modulus + 7

    @property
    def vocab_out(self) -> int:
        return self.modulus

    def _apply(self, a: int, op: int, b: int) -> int:
        return (a + b if op == self.PLUS else a - b if op == self.MINUS else a * b) % self.modulus

    def _number(self, rng):
        n = rng.randrange(self.modulus)
        return [n], n

    def _term(self, rng, n: int):
        """An operand of n (odd) tokens: a number, or a bracketed expression."""
        if n == 1:
            return self._number(rng)
        tokens, value = self._expression(rng, n - 2)
        m = self.modulus
        return [m + self.OPEN] + tokens + [m + self.CLOSE], value

    def _expression(self, rng, n: int):
        """A bracketed expression of n (odd) tokens: a term, or term op term."""
        if n == 1:
            return self._number(rng)
        left = 2 * rng.randrange((n - 1) // 2) + 1  # odd, in [1, n - 2]
        a, va = self._term(rng, left)
        b, vb = self._term(rng, n - 1 - left)
        op = rng.randrange(3)
        return a + [self.modulus + op] + b, self._apply(va, op, vb)

    def _flat(self, rng, n: int):
        tokens, value = self._number(rng)
        for _ in range((n - 1) // 2):
            op, (b, vb) = rng.randrange(3), self._number(rng)
            tokens += [self.modulus + op] + b
            value = self._apply(value, op, vb)
        return tokens, value

    def batch(self, gen: torch.Generator, batch: int, length: int):
        import random

        if length < 2:
            raise ValueError(f"{self.name}: length must be >= 2 (an expression and '='), got {length}")
        rng = random.Random(int(torch.randint(0, 2**62, (1,), generator=gen)))
        n = length - 1 if (length - 1) % 2 else length - 2
        pad = [self.modulus + self.PAD] * (length - 1 - n)
        x = torch.empty(batch, length, dtype=torch.int64)
        y = torch.zeros(batch, length, dtype=torch.int64)
        for b in range(batch):  # data generation: O(T) Python per sequence
            tokens, value = (self._expression if self.brackets else self._flat)(rng, n)
            x[b] = torch.tensor(pad + tokens + [self.modulus + self.EQUALS])
            y[b, -1] = value
        return x, y, answer_only(y)


@dataclass(frozen=True)
class MultiQueryAssociativeRecall:
    """Zoology's MQAR: `pairs` key-value pairs (k_1 v_1 ... k_D v_D) open the sequence; the rest
    holds queries (keys of those pairs, each pair queried at most once) at random positions
    between filler tokens (0). The target at a query position is its key's value; only query
    positions are scored. Keys come from [1, 1 + keys), values from [1 + keys, vocab)."""

    pairs: int = 8
    keys: int = 64
    values: int = 64

    @property
    def name(self) -> str:
        return f"mqar{self.pairs}"

    @property
    def vocab_in(self) -> int:
        return 1 + self.keys + self.values

    @property
    def vocab_out(self) -> int:
        return self.vocab_in

    def batch(self, gen: torch.Generator, batch: int, length: int):
        D = self.pairs
        if length < 4 * D:
            raise ValueError(f"mqar: length must be >= 4 * pairs = {4 * D}, got {length}")
        keys = torch.argsort(torch.rand(batch, self.keys, generator=gen), dim=1)[:, :D] + 1
        values = torch.randint(0, self.values, (batch, D), generator=gen) + 1 + self.keys
        x = torch.zeros(batch, length, dtype=torch.int64)
        y = torch.zeros(batch, length, dtype=torch.int64)
        mask = torch.zeros(batch, length, dtype=torch.bool)
        x[:, 0:2 * D:2], x[:, 1:2 * D:2] = keys, values
        # Query slots: D distinct positions in [2D, length), in a random order of the pairs.
        slots = torch.argsort(torch.rand(batch, length - 2 * D, generator=gen), dim=1)[:, :D] + 2 * D
        order = torch.argsort(torch.rand(batch, D, generator=gen), dim=1)
        rows = torch.arange(batch)[:, None]
        x[rows, slots] = keys.gather(1, order)
        y[rows, slots] = values.gather(1, order)
        mask[rows, slots] = True
        return x, y, mask


@dataclass(frozen=True)
class InContextRegression:
    """Sequences of `pairs` examples of a random linear map y = W x (W ~ N(0, 1/dim), x ~ N(0, I),
    fresh per sequence). Inputs [B, 2*pairs, dim + 1]: position 2i carries (x_i, 0), position
    2i+1 carries (y_i, 1) in the first channel block (y is scalar-per-output: out_dim = 1 here,
    as in Garg et al.'s linear-regression task). Targets [B, 2*pairs, 1]: y_i at position 2i,
    scored there (the model has seen i earlier examples). With `switch`, examples
    pairs // 2 .. pairs - 1 follow a second map W' drawn like W (non-stationary)."""

    dim: int = 8
    noise: float = 0.0
    switch: bool = False

    @property
    def name(self) -> str:
        return "regression_switch" if self.switch else "regression"

    def weights(self, gen: torch.Generator, batch: int, pairs: int) -> torch.Tensor:
        """[B, pairs, dim]: the map of every example (one, or two switching at pairs // 2)."""
        d = self.dim
        w = (torch.randn(batch, 1, d, generator=gen) / math.sqrt(d)).expand(batch, pairs, d)
        if self.switch:
            w = w.clone()
            w[:, pairs // 2:] = torch.randn(batch, 1, d, generator=gen) / math.sqrt(d)
        return w

    def batch(self, gen: torch.Generator, batch: int, pairs: int):
        d = self.dim
        w = self.weights(gen, batch, pairs)
        x = torch.randn(batch, pairs, d, generator=gen)
        y = (x * w).sum(-1, keepdim=True)
        if self.noise:
            y = y + self.noise * torch.randn(y.shape, generator=gen)
        inputs = torch.zeros(batch, 2 * pairs, d + 1)
        inputs[:, 0::2, :d] = x
        inputs[:, 1::2, :1] = y
        inputs[:, 1::2, d] = 1.0  # marks a y position
        targets = torch.zeros(batch, 2 * pairs, 1)
        targets[:, 0::2] = y
        mask = torch.zeros(batch, 2 * pairs, dtype=torch.bool)
        mask[:, 0::2] = True
        return inputs, targets, mask

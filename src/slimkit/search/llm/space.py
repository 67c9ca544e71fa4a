"""The candidates of the causal-LM search (one precision recipe on one structural variant),
how a sampler picks one, and what each costs: bytes read per decoded token (decode on CPU is
memory-bound) and bytes on disk, estimated from the model's shapes."""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import Any

from slimkit.search.llm.config import LLMSearchConfig

# bytes per weight of each precision, with its scales (fp32 per block of int4/int8
# MatMulNBits, plus the packed zero point of asymmetric blocks; fp32 per row of W8A8)
SCALE_BYTES = 4


@dataclass(frozen=True)
class Candidate:
    """One point of the space. ``method``/``block``/``keep_8bit``/``lm_head`` apply to int4
    (int8 weight-only: block 32, int8 head)."""

    precision: str = "fp32"
    method: str = "rtn"
    block: int = 32
    keep_8bit: float = 0.0
    lm_head: str = "int8"
    depth: float = 0.0
    width: float = 0.0

    @property
    def structural(self) -> tuple[float, float]:
        return self.depth, self.width

    @property
    def single(self) -> bool:
        """One technique alone: one precision for every decoder layer, no pruning."""
        return self.depth == 0 and self.width == 0 and self.keep_8bit == 0

    @property
    def label(self) -> str:
        parts = [self.precision]
        if self.precision == "int4":
            parts += [self.method, f"b{self.block}", f"head-{self.lm_head}"]
            if self.keep_8bit:
                parts.append(f"keep8-{self.keep_8bit:g}")
        if self.depth:
            parts.append(f"depth-{self.depth:g}")
        if self.width:
            parts.append(f"width-{self.width:g}")
        return "_".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def enumerate_space(config: LLMSearchConfig) -> list[Candidate]:
    """Every candidate of the space, singles first (fp32 last: it is the reference)."""
    out: list[Candidate] = []
    for depth, width in itertools.product(config.depth_ratios, config.width_ratios):
        for precision in config.precisions:
            if precision != "int4":
                out.append(Candidate(precision, depth=depth, width=width))
                continue
            for method, block, keep, head in itertools.product(
                    config.int4_methods, config.block_sizes, config.keep_8bit, config.lm_head):
                out.append(Candidate("int4", method, block, keep, head, depth, width))
    return sorted(out, key=lambda c: (not c.single, c.precision == "fp32"))


def suggest(trial: Any, config: LLMSearchConfig) -> Candidate:
    """The candidate an Optuna trial asks for (conditional: the int4 knobs only under int4)."""
    precision = trial.suggest_categorical("precision", list(config.precisions))
    depth = trial.suggest_categorical("depth", list(config.depth_ratios))
    width = trial.suggest_categorical("width", list(config.width_ratios))
    if precision != "int4":
        return Candidate(precision, depth=depth, width=width)
    return Candidate("int4", trial.suggest_categorical("method", list(config.int4_methods)),
                     trial.suggest_categorical("block", list(config.block_sizes)),
                     trial.suggest_categorical("keep_8bit", list(config.keep_8bit)),
                     trial.suggest_categorical("lm_head", list(config.lm_head)), depth, width)


def optuna_params(candidate: Candidate) -> dict[str, Any]:
    """The trial parameters that ask for ``candidate`` (for ``study.enqueue_trial``)."""
    params: dict[str, Any] = {"precision": candidate.precision, "depth": candidate.depth,
                              "width": candidate.width}
    if candidate.precision == "int4":
        params.update(method=candidate.method, block=candidate.block,
                      keep_8bit=candidate.keep_8bit, lm_head=candidate.lm_head)
    return params


def weight_bytes(bits: float, count: int, block: int, symmetric: bool = True) -> float:
    """Bytes of ``count`` weights at ``bits`` in blocks of ``block`` (scale + zero point)."""
    per_block = SCALE_BYTES + (0 if symmetric else bits / 8)
    return count * bits / 8 + count / block * per_block


def linear_shapes(hf: Any) -> tuple[int, int, int]:
    """Parameters of the decoder layers' linears, of the LM head, and of the embeddings."""
    import torch

    layers = hf.model.layers
    decoder = sum(m.weight.numel() for m in layers.modules() if isinstance(m, torch.nn.Linear))
    head = hf.get_output_embeddings().weight.numel()
    return decoder, head, hf.get_input_embeddings().weight.numel()


def cost(candidate: Candidate, shapes: tuple[int, int, int]) -> dict[str, float]:
    """``bytes_per_token`` (weights read to decode one token: decoder linears and the head;
    an embedding row is negligible) and ``size_bytes`` (weights on disk) of a candidate on a
    variant of the given shapes."""
    decoder, head, embedding = shapes
    symmetric = candidate.method != "hqq"
    if candidate.precision == "fp32":
        layers, head_b, emb_b = 4.0 * decoder, 4.0 * head, 4.0 * embedding
    elif candidate.precision in ("int8", "w8a8"):
        layers = weight_bytes(8, decoder, 32 if candidate.precision == "int8" else 10**9)
        head_b = weight_bytes(8, head, 32)
        emb_b = weight_bytes(8, embedding, 32)
    else:
        k = candidate.keep_8bit
        layers = weight_bytes(8, int(k * decoder), candidate.block) + weight_bytes(
            4, int((1 - k) * decoder), candidate.block, symmetric)
        head_bits = 4 if candidate.lm_head == "int4" else 8
        head_b = weight_bytes(head_bits, head, candidate.block if head_bits == 4 else 32)
        emb_b = weight_bytes(8, embedding, 32)
    return {"bytes_per_token": layers + head_b, "size_bytes": layers + head_b + emb_b}

"""Structured pruning of any graph through the axis graph (``slimkit.graph.axes``, issue 15):
groups found from torch.export's graph (heads, FFN neurons, hidden size, recurrent units,
grouped convolutions), tied tensors kept tied, size attributes updated, plans that replay and
save, removal that equals zeroing, and groups that break the forward left whole and named."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from slimkit.graph.axes_trace import trace_axes
from slimkit.graph.plan import apply_plan, compose_plans
from slimkit.model import Model, TensorSpec
from slimkit.prune import PruneConfig, load_pruned, prune
from slimkit.prune.anygraph import plan_any
from slimkit.testing import assert_close_to_reference
from slimkit.testing.graphs import graph_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run(module: nn.Module, *args: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return module.eval()(*args)


def ids(batch: int = 2, length: int = 7) -> torch.Tensor:
    return torch.randint(0, 50, (batch, length), generator=torch.Generator().manual_seed(1))


def test_fused_qkv_gqa_rotary_lm_groups():
    groups = trace_axes(graph_model("tied-rotary-gqa-lm")).graph.groups()
    kinds = sorted((g.kind, len(g.leaves), g.prunable) for g in groups)
    # hidden (tied embedding + every block), 2 key/value heads per layer, 128 FFN neurons
    # per layer; the head size (rotary) and the vocabulary (ids, output) stay whole
    assert ("hidden", 32, True) in kinds and kinds.count(("heads", 2, True)) == 2
    assert kinds.count(("channels", 128, True)) == 2
    pinned = [g for g in groups if not g.prunable]
    assert any("sliced at fixed positions" in reason for g in pinned for reason in g.pinned)


def test_tied_embeddings_stay_tied_and_the_lm_runs():
    model = graph_model("tied-rotary-gqa-lm")
    result = prune(model, PruneConfig(ratio=0.5, round_to=4))
    module = result.model.module
    assert module.embed.weight is module.lm_head.weight and module.embed.weight.shape == (50, 16)
    assert module.embed.embedding_dim == 16 and module.norms[0].normalized_shape == (16,)
    assert run(module, ids()).shape == (2, 7, 50)


def test_recurrent_hidden_units_are_pruned_in_every_gate_layer_and_direction():
    model = graph_model("gru-bidirectional")
    result = prune(model, PruneConfig(ratio=0.5, round_to=4))
    rnn = result.model.module.rnn
    assert (rnn.input_size, rnn.hidden_size) == (8, 16)
    assert rnn.weight_ih_l1.shape == (48, 32) and rnn.weight_hh_l0_reverse.shape == (48, 16)
    assert run(result.model.module, ids()).shape == (2, 3)


def test_class_token_positions_layerscale_and_relative_tables_follow():
    model = graph_model("layerscale-vit")
    result = prune(model, PruneConfig(ratio=0.5, round_to=4))
    vit = result.model.module
    assert vit.cls.shape == (1, 1, 16) and vit.pos.shape == (1, 17, 16)
    assert vit.blocks[0].gamma1.shape == (16,) and vit.blocks[0].table.shape == (33, 2)
    assert vit.blocks[0].qkv.out_features == 3 * 2 * 8  # 2 of 4 heads of size 8, q/k/v
    assert run(vit, torch.randn(2, 3, 16, 16)).shape == (2, 10)


class NoNorms(nn.Module):
    """Attention and an FFN without norms or biases: removing a head or a neuron is exactly
    zeroing its rows and columns."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(16, 16, bias=False) for _ in range(3))
        self.o = nn.Linear(16, 16, bias=False)
        self.fc1, self.fc2 = nn.Linear(16, 32, bias=False), nn.Linear(32, 16, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        q, k, v = (p(x).view(b, s, -1, 4).transpose(1, 2) for p in (self.q, self.k, self.v))
        attn = torch.softmax(q @ k.transpose(-2, -1), dim=-1) @ v
        x = x + self.o(attn.transpose(1, 2).reshape(b, s, -1))
        return x + self.fc2(F.relu(self.fc1(x)))


def _zeroed(module: nn.Module, plan) -> nn.Module:
    zeroed = copy.deepcopy(module)
    params = dict(zeroed.named_parameters())
    with torch.no_grad():
        for edit in plan.params:
            weight = params[edit.name]
            for axis, kept in edit.keep:
                mask = torch.ones(weight.shape[axis], dtype=torch.bool)
                mask[list(kept)] = False
                weight.transpose(0, axis)[mask] = 0.0
    return zeroed


def test_removing_heads_and_neurons_equals_zeroing_them():
    torch.manual_seed(0)
    model = Model(name="nonorms", source="test", module=NoNorms().eval(),
                  inputs=(TensorSpec("x", ("batch", 5, 16)),))
    plan = plan_any(model, PruneConfig(ratio=0.5, round_to=1, importance="random"))
    kinds = {g.note.split(";")[0]: (g.channels, g.kept) for g in plan.groups}
    assert kinds["attention heads"] == (4, 2) and kinds["channels"] == (32, 16)
    pruned = apply_plan(copy.deepcopy(model.module), plan)
    x = torch.randn(3, 5, 16)
    assert_close_to_reference(run(pruned, x).numpy(), run(_zeroed(model.module, plan), x).numpy(),
                              atol=1e-5, rtol=1e-5)


def test_the_plan_saves_loads_and_composes(tmp_path):
    model = graph_model("lstm")
    config = PruneConfig(ratio=0.5, round_to=4)
    result = prune(model, config)
    assert result.plan.params and result.plan.extra["planner"].startswith("axis")
    args = (ids(),)
    loaded = load_pruned(result.save(tmp_path / "pruned"), graph_model("lstm"))
    assert_close_to_reference(run(loaded.module, *args).numpy(),
                              run(result.model.module, *args).numpy(), atol=1e-6, rtol=1e-6)
    second = plan_any(result.model, config)
    both = compose_plans(result.plan, second)
    once = apply_plan(copy.deepcopy(model.module), both)
    twice = apply_plan(copy.deepcopy(result.model.module), second)
    assert_close_to_reference(run(once, *args).numpy(), run(twice, *args).numpy(),
                              atol=1e-6, rtol=1e-6)


class FixedWidth(nn.Module):
    """Uses its hidden width as a number the graph cannot see (``self.w``)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = 32
        self.fc1, self.fc2 = nn.Linear(8, 32), nn.Linear(32, 32)
        self.head = nn.Linear(32, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc2(torch.relu(self.fc1(x)))
        return self.head(torch.relu(h).reshape(-1, self.w))


def test_a_group_that_breaks_the_forward_is_left_whole_and_named():
    model = Model(name="fixed", source="test", module=FixedWidth().eval(),
                  inputs=(TensorSpec("x", ("batch", 8)),))
    result = prune(model, PruneConfig(ratio=0.5))
    notes = {g.layers[0]: (g.kept, g.note) for g in result.plan.groups}
    assert notes["fc1"][0] == 16  # pruned
    assert notes["fc2"][0] == 32 and "fails in layer" in notes["fc2"][1]
    assert run(result.model.module, torch.randn(2, 8)).shape == (2, 2)


def test_a_classifier_loses_hidden_size_unless_told_to_keep_it():
    transformers = pytest.importorskip("transformers")
    from slimkit.load.hf import HFTask

    config = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1,
                                     num_attention_heads=4, intermediate_size=64,
                                     max_position_embeddings=32, num_labels=2)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        hf = transformers.BertForSequenceClassification(config).eval()
    inputs = (TensorSpec("input_ids", ("batch", "sequence"), "int64", 50, (1, 30)),
              TensorSpec("attention_mask", ("batch", "sequence"), "int64", None, (1, 30)))
    model = Model(name="bert", source="test", inputs=inputs, output_names=("logits",),
                  module=HFTask(hf, ("input_ids", "attention_mask"), ("logits",),
                                {"return_dict": True}).eval())
    kept = prune(model, PruneConfig(ratio=0.5, hidden_ratio=0.0))  # heads and FFN only
    assert kept.model.module.model.bert.embeddings.word_embeddings.weight.shape == (50, 32)
    assert "planner" not in kept.plan.extra  # the transformer-block path
    result = prune(model, PruneConfig(ratio=0.5))  # a head reads the hidden size: it shrinks
    assert result.model.module.model.bert.embeddings.word_embeddings.weight.shape == (50, 16)
    batch = (ids(2, 6), torch.ones(2, 6, dtype=torch.long))
    assert run(result.model.module, *batch).shape == (2, 2)

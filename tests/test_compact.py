""".slim files: Huffman and codecs, lossless layouts, exact round trips, checksums, the
Deep Compression pipeline and the command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from slimkit.cli import main
from slimkit.cluster import ClusterConfig, cluster
from slimkit.compact import (
    DeepCompressConfig,
    deep_compress,
    huffman,
    load_slim,
    read_slim,
    write_slim,
)
from slimkit.compact.codecs import ALL_CODECS, decode, encode_best
from slimkit.compact.layout import decode_float, encode_float
from slimkit.data import Dataset
from slimkit.errors import InputError, ModelLoadError, OutputPathError
from slimkit.graph.masks import finalize
from slimkit.load import load_model
from slimkit.prune import PruneConfig, prune
from slimkit.testing import tiny_model


def _compressed(kind: str = "cnn"):
    sparse = finalize(prune(tiny_model(kind), PruneConfig(mode="unstructured", ratio=0.6)).model)
    return cluster(sparse, ClusterConfig(clusters=4)).model


def _outputs(model, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.module.eval()(x)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 300).flatmap(
    lambda a: st.tuples(st.just(a), st.lists(st.integers(0, a - 1), max_size=400))))
def test_huffman_round_trip(case: tuple[int, list[int]]) -> None:
    alphabet, symbols = case
    data = np.array(symbols, dtype=np.int64)
    assert huffman.decode(huffman.encode(data, alphabet)).tolist() == symbols


def test_huffman_lengths_are_limited_and_optimal_on_a_closed_form() -> None:
    assert huffman.code_lengths(np.array([8, 4, 2, 1, 1])).tolist() == [1, 2, 3, 4, 4]
    fibonacci = np.array([1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610, 987, 1597,
                          2584, 4181, 6765])
    assert huffman.code_lengths(fibonacci).max() <= huffman.MAX_LENGTH


@pytest.mark.parametrize("bits", [1, 3, 8, 12, 16])
def test_every_codec_round_trips(bits: int) -> None:
    symbols = np.random.default_rng(bits).integers(0, 1 << bits, 500)
    for name in ALL_CODECS:
        _, blob, sizes = encode_best(symbols, bits, (name,))
        best = min(sizes, key=lambda n: (sizes[n], n != "raw"))
        assert np.array_equal(decode(best, blob, len(symbols), bits), symbols), name


def test_layouts_are_lossless_and_chosen_by_size() -> None:
    rng = np.random.default_rng(0)
    dense = rng.standard_normal((16, 9)).astype(np.float32)
    book = np.array([-1, -0.5, -0.25, 0.125, 0.25, 0.5, 0.75, 1], dtype=np.float32)
    clustered = book[rng.integers(0, 8, (32, 18))]
    clustered[rng.random(clustered.shape) < 0.8] = 0
    per_row = (rng.integers(1, 5, (80, 40)) * rng.standard_normal((80, 1))).astype(np.float32)
    cases = {"dense": dense, "codebook": clustered, "rows": per_row}
    for layout, values in cases.items():
        enc = encode_float(values)
        assert enc.entry["layout"] == layout
        assert np.array_equal(decode_float(enc.entry, enc.data, values.shape), values)
    assert encode_float(clustered).entry["sparse"] is True
    assert encode_float(clustered).entry["store"] == "float16"
    assert encode_float(dense).entry["store"] == "float32"  # not exact in half: kept


def test_round_trip_is_exact_with_norms_buffers_and_sparsity(tmp_path: Path) -> None:
    model = _compressed("cnn")
    info = write_slim(model, tmp_path / "m.slim")
    assert info.file_bytes == (tmp_path / "m.slim").stat().st_size
    loaded = load_model(str(tmp_path / "m.slim"))
    for key, value in model.module.state_dict().items():
        assert torch.equal(loaded.module.state_dict()[key], value), key
    x = torch.randn(4, 3, 8, 8)
    assert torch.equal(_outputs(loaded, x), _outputs(model, x))
    assert loaded.inputs == model.inputs and loaded.task == model.task
    layouts = {row["tensor"]: row for row in info.tensors}
    assert layouts["conv.weight"]["layout"] == "codebook" and layouts["conv.weight"]["sparse"]
    assert layouts["bn.num_batches_tracked"]["layout"] == "bytes"


def test_a_clustered_file_is_much_smaller_than_plain(tmp_path: Path) -> None:
    plain = write_slim(tiny_model("mlp"), tmp_path / "plain.slim")
    small = write_slim(_compressed("mlp"), tmp_path / "small.slim")
    assert small.payload_bytes < plain.payload_bytes / 3


def test_tampered_and_truncated_files_are_refused(tmp_path: Path) -> None:
    path = write_slim(_compressed("mlp"), tmp_path / "m.slim").path
    raw = bytearray(path.read_bytes())
    tampered = tmp_path / "tampered.slim"
    raw[-3] ^= 0xFF
    tampered.write_bytes(bytes(raw))
    with pytest.raises(ModelLoadError, match="SHA-256"):
        load_slim(tampered)
    truncated = tmp_path / "truncated.slim"
    truncated.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ModelLoadError, match="truncated or damaged"):
        load_slim(truncated)
    garbage = tmp_path / "garbage.slim"
    garbage.write_bytes(b"not a model")
    with pytest.raises(ModelLoadError):
        load_model(str(garbage))


def test_not_a_slim_safetensors_file_is_refused(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    other = tmp_path / "other.slim"
    save_file({"x": np.zeros(3, np.float32)}, str(other))
    with pytest.raises(ModelLoadError, match="not a .slim file"):
        read_slim(other)


def test_writing_is_atomic_and_refuses_masked_models(tmp_path: Path) -> None:
    with pytest.raises(OutputPathError):
        write_slim(tiny_model("mlp"), tmp_path / "missing" / "m.slim")
    masked = prune(tiny_model("mlp"), PruneConfig(mode="unstructured", ratio=0.5)).model
    with pytest.raises(ModelLoadError, match="finalize"):
        write_slim(masked, tmp_path / "m.slim")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputError):
        write_slim(tiny_model("mlp"), tmp_path / "m.slim", codecs=("gzip",))


def test_manifest_records_codecs_and_checksum(tmp_path: Path) -> None:
    path = write_slim(_compressed("mlp"), tmp_path / "m.slim").path
    manifest, state = read_slim(path)
    assert manifest["model"]["source"] == "slimkit.testing:tiny_mlp"
    streams = [s for t in manifest["tensors"] for s in t["streams"]]
    assert {s[0] for s in streams} <= set(ALL_CODECS)
    assert set(state) == {t["name"] for t in manifest["tensors"]}


def test_deep_compress_verifies_the_file_and_reports_stages(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 8)).astype(np.float32)
    data = Dataset({"input": x}, labels=(x[:, 0] > 0).astype(np.int64))
    config = DeepCompressConfig(sparsity=0.5, clusters=4, prune_epochs=2, cluster_epochs=1,
                                lr=1e-2)
    result = deep_compress(tiny_model("mlp"), data, config, output=tmp_path / "m.slim")
    report = result.sections
    assert [s["stage"] for s in report["stages"]] == ["original", "pruned", "clustered",
                                                      "float16 rest"]
    assert report["verify"]["max_abs_difference"] == 0.0
    assert report["file"]["file_bytes"] == (tmp_path / "m.slim").stat().st_size
    assert set(report["codecs"]) == {"huffman", "stdlib", "best"}
    assert report["codecs"]["best"]["file_bytes"] <= min(
        report["codecs"]["huffman"]["file_bytes"], report["codecs"]["stdlib"]["file_bytes"])
    weight = result.model.module.fc1.weight
    assert 0.45 <= float((weight == 0).float().mean()) <= 0.55
    assert torch.unique(weight[weight != 0]).numel() <= 4
    with pytest.raises(InputError, match="labels"):
        deep_compress(tiny_model("mlp"), Dataset({"input": x}), config)
    with pytest.raises(InputError, match="fewer than the 128 clusters"):
        deep_compress(tiny_model("mlp"), data, DeepCompressConfig(clusters=128))


def test_command_packs_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "m.slim"
    code = main(["--quiet", "compact", "slimkit.testing:tiny_mlp", "--input-shape", "1x8",
                 "-o", str(out), "--pack-only", "--json"])
    assert code == 0 and out.is_file()
    report = json.loads(Path(str(out) + ".report.json").read_text())
    assert report["file_bytes"] == out.stat().st_size
    bad = tmp_path / "bad.slim"
    bad.write_bytes(out.read_bytes()[:-4])
    assert main(["compact", str(bad), "-o", str(tmp_path / "x.slim"), "--pack-only"]) == 2


def test_structured_plan_is_replayed_and_rewriting_keeps_the_source(tmp_path: Path) -> None:
    pruned = prune(tiny_model("cnn"), PruneConfig(ratio=0.5, round_to=2))
    info = write_slim(pruned.model, tmp_path / "p.slim", plan=pruned.plan.to_dict())
    loaded = load_slim(info.path)
    assert loaded.module.conv.out_channels == 4
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(_outputs(loaded, x), _outputs(pruned.model, x))
    again = write_slim(loaded, tmp_path / "again.slim")
    manifest, _ = read_slim(again.path)
    assert manifest["model"]["source"] == "slimkit.testing:tiny_cnn"
    assert manifest["model"]["plan"] is not None


def test_command_runs_the_pipeline_on_npz_data(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 8)).astype(np.float32)
    np.savez(tmp_path / "d.npz", input=x, labels=(x[:, 0] > 0).astype(np.int64))
    out = tmp_path / "m.slim"
    code = main(["--quiet", "compact", "slimkit.testing:tiny_mlp", "--input-shape", "1x8",
                 "-o", str(out), "--data", str(tmp_path / "d.npz"), "--sparsity", "0.5",
                 "--clusters", "4", "--prune-epochs", "1", "--cluster-epochs", "1", "--json"])
    assert code == 0
    report = json.loads(Path(str(out) + ".report.json").read_text())
    assert report["verify"]["max_abs_difference"] == 0.0
    assert report["file"]["file_bytes"] == out.stat().st_size

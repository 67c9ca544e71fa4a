import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from slimkit import load_data
from slimkit.data import Dataset
from slimkit.data.digits import digits_splits
from slimkit.errors import DataError
from slimkit.testing import tiny_model


def test_digits_split_is_fixed_and_disjoint():
    splits = digits_splits()
    assert {k: len(v[1]) for k, v in splits.items()} == {"train": 1078, "val": 359, "test": 360}
    flat = {k: {x.tobytes() for x in v[0]} for k, v in splits.items()}
    assert not (flat["train"] & flat["test"])  # no image is in both (duplicates aside)
    assert splits["test"][0].dtype == np.float32 and splits["test"][0].max() <= 1.0


def test_digits_reshaped_to_model_input(digits_cnn):
    from slimkit import load_model

    cnn = load_data("builtin:digits:val", digits_cnn)
    assert cnn.inputs["input"].shape == (359, 1, 8, 8) and cnn.labels.shape == (359,)
    mlp_like = load_model("slimkit.testing:tiny_mlp", input_shape="1x64")
    assert load_data("builtin:digits", mlp_like).inputs["input"].shape == (360, 64)
    with pytest.raises(DataError, match="do not fit input"):
        load_data("builtin:digits", tiny_model("mlp"))
    with pytest.raises(DataError, match="unknown split"):
        load_data("builtin:digits:holdout", digits_cnn)


def test_npz(tmp_path):
    model = tiny_model("mlp")
    x = np.random.default_rng(0).standard_normal((10, 8)).astype(np.float64)
    np.savez(tmp_path / "d.npz", input=x, labels=np.arange(10))
    ds = load_data(str(tmp_path / "d.npz"), model)
    assert ds.inputs["input"].dtype == np.float32 and list(ds.labels) == list(range(10))
    np.savez(tmp_path / "bad.npz", a=x, b=x)
    with pytest.raises(DataError, match="name the arrays after the model's inputs"):
        load_data(str(tmp_path / "bad.npz"), model)
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(DataError, match="cannot read"):
        load_data(str(tmp_path / "broken.npz"), model)


def test_text_needs_tokenizer_and_is_tokenised(tmp_path, minilm):
    (tmp_path / "s.txt").write_text("first sentence\n\nsecond, longer sentence here\n")
    ds = load_data(str(tmp_path / "s.txt"), minilm)
    assert len(ds) == 2 and set(ds.inputs) == set(minilm.input_names)
    assert ds.inputs["input_ids"].dtype == np.int64
    with pytest.raises(DataError, match="no tokenizer"):
        load_data(str(tmp_path / "s.txt"), tiny_model("mlp"))


def test_synthetic_follows_spec(minilm):
    ds = load_data("synthetic:3", minilm)
    assert ds.inputs["input_ids"].shape == (3, 128)
    assert ds.inputs["input_ids"].max() < 30522 and ds.inputs["attention_mask"].min() == 1
    with pytest.raises(DataError, match="positive integer"):
        load_data("synthetic:x", minilm)


def test_unknown_spec(tmp_path):
    (tmp_path / "d.csv").write_text("1,2")
    with pytest.raises(DataError, match="unknown data spec"):
        load_data(str(tmp_path / "d.csv"), tiny_model())


@given(n=st.integers(1, 50), batch=st.integers(1, 20))
def test_batches_cover_every_example_once(n, batch):
    ds = Dataset({"x": np.arange(n)}, labels=np.arange(n))
    seen = np.concatenate([b["x"] for b, _ in ds.batches(batch)])
    assert seen.tolist() == list(range(n))


def test_dataset_validation_and_from_batches():
    with pytest.raises(DataError, match="differ in length"):
        Dataset({"a": np.zeros(2), "b": np.zeros(3)})
    ds = Dataset.from_batches([{"x": np.zeros((2, 3)), "labels": np.ones(2)}] * 3)
    assert len(ds) == 6 and ds.labels.shape == (6,)


def test_digits_fit_a_larger_image_model_by_upsampling():
    from slimkit import load_data, load_model

    model = load_model("builtin:resnet18-cifar")
    data = load_data("builtin:digits:val", model)
    batch = data.first_batch(4)[model.input_names[0]]
    assert batch.shape == (4, 3, 32, 32) and data.name == "digits:val@3x32x32"
    assert np.allclose(batch[:, 0], batch[:, 2])  # the grey image repeated over channels

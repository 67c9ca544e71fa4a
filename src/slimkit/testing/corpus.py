"""A corpus of architectures a user may bring, tiny and randomly initialised, for the coverage
suite (``tests/test_coverage.py``) and benchmark (``benchmarks/bench_coverage.py``): Hugging
Face models built from transformers' own config classes (text, vision, audio; encoders, causal
LMs and task heads) and plain-torch graphs (``slimkit.testing.graphs``).

``HF_MODELS`` maps a name to (config class, architecture, config fields); ``hf_folder`` writes
one as a Hugging Face folder (config.json + safetensors), loaded like a user's with
``load_model``. ``corpus_model`` gives any entry as a Model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from slimkit.model import Model

TEXT = {"vocab_size": 99, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 64, "max_position_embeddings": 64}
DECODER = {**TEXT, "num_key_value_heads": 2}
VISION = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
          "intermediate_size": 64, "image_size": 32, "patch_size": 8}
CNN = {"image_size": 32}

HF_MODELS: dict[str, tuple[str, str, dict[str, Any]]] = {
    # text encoders
    "bert": ("BertConfig", "BertModel", TEXT),
    "roberta": ("RobertaConfig", "RobertaModel", TEXT),
    "distilbert": ("DistilBertConfig", "DistilBertModel",
                   {"vocab_size": 99, "dim": 32, "n_layers": 2, "n_heads": 4, "hidden_dim": 64,
                    "max_position_embeddings": 64}),
    "albert": ("AlbertConfig", "AlbertModel", {**TEXT, "embedding_size": 16}),
    "electra": ("ElectraConfig", "ElectraModel", {**TEXT, "embedding_size": 16}),
    "deberta-v2": ("DebertaV2Config", "DebertaV2Model",
                   {**TEXT, "relative_attention": True, "position_buckets": 16,
                    "pos_att_type": ["p2c", "c2p"], "max_relative_positions": 32}),
    "mpnet": ("MPNetConfig", "MPNetModel", TEXT),
    "xlm-roberta": ("XLMRobertaConfig", "XLMRobertaModel", TEXT),
    "t5-encoder": ("T5Config", "T5EncoderModel",
                   {"vocab_size": 99, "d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 2,
                    "num_heads": 4, "relative_attention_num_buckets": 8}),
    # decoders (causal LMs: logits)
    "gpt2": ("GPT2Config", "GPT2LMHeadModel",
             {"vocab_size": 99, "n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 64,
              "bos_token_id": 0, "eos_token_id": 0}),
    "gpt-neo": ("GPTNeoConfig", "GPTNeoForCausalLM",
                {"vocab_size": 99, "hidden_size": 32, "num_layers": 2, "num_heads": 4,
                 "attention_types": [[["global", "local"], 1]], "max_position_embeddings": 64,
                 "window_size": 8, "bos_token_id": 0, "eos_token_id": 0}),
    "llama": ("LlamaConfig", "LlamaForCausalLM", DECODER),
    "mistral": ("MistralConfig", "MistralForCausalLM", {**DECODER, "sliding_window": 16}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", DECODER),
    "phi": ("PhiConfig", "PhiForCausalLM", {**TEXT, "partial_rotary_factor": 0.5}),
    "gemma": ("GemmaConfig", "GemmaForCausalLM", {**DECODER, "head_dim": 8}),
    "opt": ("OPTConfig", "OPTForCausalLM",
            {"vocab_size": 99, "hidden_size": 32, "num_hidden_layers": 2,
             "num_attention_heads": 4, "ffn_dim": 64, "max_position_embeddings": 64,
             "word_embed_proj_dim": 32, "bos_token_id": 0, "eos_token_id": 0,
             "pad_token_id": 1}),
    "bloom": ("BloomConfig", "BloomForCausalLM",
              {"vocab_size": 99, "hidden_size": 32, "n_layer": 2, "n_head": 4,
               "bos_token_id": 0, "eos_token_id": 0}),
    "falcon": ("FalconConfig", "FalconForCausalLM",
               {"vocab_size": 99, "hidden_size": 32, "num_hidden_layers": 2,
                "num_attention_heads": 4, "bos_token_id": 0, "eos_token_id": 0}),
    # task heads
    "bert-seqcls": ("BertConfig", "BertForSequenceClassification", {**TEXT, "num_labels": 3}),
    "roberta-tokcls": ("RobertaConfig", "RobertaForTokenClassification",
                       {**TEXT, "num_labels": 5}),
    "distilbert-mlm": ("DistilBertConfig", "DistilBertForMaskedLM",
                       {"vocab_size": 99, "dim": 32, "n_layers": 2, "n_heads": 4,
                        "hidden_dim": 64, "max_position_embeddings": 64}),
    "vit-imgcls": ("ViTConfig", "ViTForImageClassification", {**VISION, "num_labels": 4}),
    # vision
    "vit": ("ViTConfig", "ViTModel", VISION),
    "deit": ("DeiTConfig", "DeiTModel", VISION),
    "beit": ("BeitConfig", "BeitModel",
             {**VISION, "use_relative_position_bias": True, "layer_scale_init_value": 0.1,
              "use_mean_pooling": True}),
    "convnext": ("ConvNextConfig", "ConvNextForImageClassification",
                 {"hidden_sizes": [16, 32], "depths": [1, 1], "num_stages": 2, **CNN}),
    "resnet": ("ResNetConfig", "ResNetForImageClassification",
               {"embedding_size": 16, "hidden_sizes": [16, 32], "depths": [1, 1],
                "layer_type": "bottleneck", **CNN}),
    "regnet": ("RegNetConfig", "RegNetForImageClassification",
               {"embedding_size": 16, "hidden_sizes": [16, 32], "depths": [1, 1],
                "groups_width": 8, "layer_type": "y", **CNN}),
    "mobilenet-v2": ("MobileNetV2Config", "MobileNetV2ForImageClassification",
                     {"depth_multiplier": 0.25, **CNN}),
    "efficientnet": ("EfficientNetConfig", "EfficientNetForImageClassification",
                     {"width_coefficient": 0.25, "depth_coefficient": 0.25, "image_size": 32,
                      "hidden_dim": 320}),
    "swin": ("SwinConfig", "SwinForImageClassification",
             {"image_size": 32, "patch_size": 4, "embed_dim": 16, "depths": [1, 1],
              "num_heads": [2, 4], "window_size": 4}),
    "mobilevit": ("MobileViTConfig", "MobileViTForImageClassification",
                  {"image_size": 32, "patch_size": 2, "hidden_sizes": [32, 32, 32],
                   "neck_hidden_sizes": [8, 8, 16, 16, 16, 24, 32], "num_attention_heads": 4}),
    "segformer": ("SegformerConfig", "SegformerForSemanticSegmentation",
                  {"image_size": 32, "num_encoder_blocks": 2, "depths": [1, 1],
                   "sr_ratios": [2, 1], "hidden_sizes": [16, 32], "patch_sizes": [7, 3],
                   "strides": [4, 2], "num_attention_heads": [1, 2], "mlp_ratios": [2, 2],
                   "decoder_hidden_size": 32, "num_labels": 3}),
    # audio
    "wav2vec2": ("Wav2Vec2Config", "Wav2Vec2ForSequenceClassification",
                 {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                  "intermediate_size": 64, "conv_dim": (16, 16, 16), "conv_stride": (5, 2, 2),
                  "conv_kernel": (10, 3, 3), "num_conv_pos_embeddings": 16,
                  "num_conv_pos_embedding_groups": 4, "num_labels": 2}),
    "whisper-encoder": ("WhisperConfig", "WhisperForAudioClassification",
                        {"vocab_size": 99, "d_model": 32, "encoder_layers": 2,
                         "decoder_layers": 1, "encoder_attention_heads": 4,
                         "decoder_attention_heads": 4, "encoder_ffn_dim": 64,
                         "decoder_ffn_dim": 64, "num_mel_bins": 16,
                         "max_source_positions": 16, "num_labels": 2}),
}

FAST_HF = ("bert-seqcls", "llama", "vit-imgcls")  # the default test run's subset


def hf_folder(name: str, folder: str | Path, seed: int = 0) -> Path:
    """Write corpus model ``name`` as a Hugging Face folder (random init from ``seed``)."""
    import transformers

    config_class, architecture, fields = HF_MODELS[name]
    config = getattr(transformers, config_class)(**fields)
    config.architectures = [architecture]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = getattr(transformers, architecture)(config).eval()
    folder = Path(folder)
    progress = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()
    try:
        model.save_pretrained(folder, safe_serialization=True)
    finally:
        if progress:
            transformers.utils.logging.enable_progress_bar()
    return folder


def corpus_names() -> list[str]:
    """Every entry: the Hugging Face models, then the plain-torch graphs."""
    from slimkit.testing.graphs import GRAPHS

    return [*HF_MODELS, *GRAPHS]


def corpus_model(name: str, folder: str | Path | None = None) -> Model:
    """Corpus entry ``name`` as a Model: a Hugging Face one is written to ``folder`` (a fresh
    temporary folder by default) and loaded from there, as a user's folder would be."""
    from slimkit.load import load_model
    from slimkit.testing.graphs import GRAPHS, graph_model

    if name in GRAPHS:
        return graph_model(name)
    if folder is None:
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix=f"slimkit-{name}-")) / name
    return load_model(str(hf_folder(name, folder)))

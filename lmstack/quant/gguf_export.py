"""GGUF export (AutoGGUF): `lmstack quant gguf MODEL OUT_DIR -t q8_0 -t q4_0 --method gptq`.

One file per requested type, `<model>-<type>.gguf`, with the architecture's hyper-parameters,
the tokenizer (copied from the GGUF the model descends from, or built from tokenizer.json) and
the chat template, so llama.cpp and Ollama run it like any GGUF.

Which tensor gets which format follows llama.cpp's quantizer: norms stay F32; the output head
(or the embedding it is tied to) gets Q6_K, or Q8_0 where its rows are not a multiple of 256;
the K mixes (Q4_K_M, ...) give some attn_v and ffn_down layers more bits; a K format that does
not fit a tensor's rows falls back per tensor (Q4_K to Q5_0, Q5_K to Q5_1, Q6_K to Q8_0), and a
32-block format that does not fit falls back to F16.

`--method` picks the integers inside those same blocks: `rtn` rounds to nearest (byte-identical
to llama.cpp's reference quantizer for the 32-block formats), `gptq` and `awq` use calibration
text to round so that the layers' outputs, not their weights, stay close. Same bytes per weight,
lower error.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from gguf import GGMLQuantizationType as T
from gguf import GGUFValueType, GGUFWriter, LlamaFileType

from lmstack import registry
from lmstack.data import dataset_reference
from lmstack.errors import LmstackError
from lmstack.formats.gguf_file import read_gguf
from lmstack.home import atomic_path, check_output
from lmstack.hub.load import ModelBundle, load_model
from lmstack.model.config import ModelConfig
from lmstack.model.gguf_io import gguf_name, to_gguf_layout
from lmstack.model.quantized import QuantizedEmbedding, QuantizedLinear
from lmstack.peft import merged_model
from lmstack.quant.calibration import calibration_text, calibration_windows
from lmstack.quant.gguf_blocks import BLOCK_SIZES, GGUF_GRIDS, pack
from lmstack.quant.grids import quantize_rtn
from lmstack.quant.methods import quantize_weights
from lmstack.quant.settings import QuantSettings, parse_settings, read_calibration_source
from lmstack.tokenizer import Tokenizer

# type name -> (default tensor type, llama.cpp's file type)
FILE_TYPES: dict[str, tuple[T, LlamaFileType]] = {
    "f32": (T.F32, LlamaFileType.ALL_F32),
    "f16": (T.F16, LlamaFileType.MOSTLY_F16),
    "bf16": (T.BF16, LlamaFileType.MOSTLY_BF16),
    "q8_0": (T.Q8_0, LlamaFileType.MOSTLY_Q8_0),
    "q4_0": (T.Q4_0, LlamaFileType.MOSTLY_Q4_0),
    "q4_1": (T.Q4_1, LlamaFileType.MOSTLY_Q4_1),
    "q5_0": (T.Q5_0, LlamaFileType.MOSTLY_Q5_0),
    "q5_1": (T.Q5_1, LlamaFileType.MOSTLY_Q5_1),
    "q4_k_s": (T.Q4_K, LlamaFileType.MOSTLY_Q4_K_S),
    "q4_k_m": (T.Q4_K, LlamaFileType.MOSTLY_Q4_K_M),
    "q5_k_s": (T.Q5_K, LlamaFileType.MOSTLY_Q5_K_S),
    "q5_k_m": (T.Q5_K, LlamaFileType.MOSTLY_Q5_K_M),
    "q6_k": (T.Q6_K, LlamaFileType.MOSTLY_Q6_K),
}
FLOAT_TYPES = (T.F32, T.F16, T.BF16)
GGUF_METHODS = ("rtn", "gptq", "awq")
# A K format that does not fit a tensor's rows, and what llama.cpp uses instead.
K_FALLBACKS = {T.Q4_K: T.Q5_0, T.Q5_K: T.Q5_1, T.Q6_K: T.Q8_0}
ARCHITECTURES = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "gemma3": "gemma3"}


def check_types(types: list[str]) -> list[str]:
    if not types:
        raise LmstackError(f"no GGUF type given; pass -t with one of {', '.join(FILE_TYPES)}")
    unknown = [t for t in types if t.lower() not in FILE_TYPES]
    if unknown:
        raise LmstackError(f"unknown GGUF type '{unknown[0]}'; use one of {', '.join(FILE_TYPES)}")
    return list(dict.fromkeys(t.lower() for t in types))


# --- which format each tensor gets (llama.cpp's llama_tensor_get_type, for the types above) --------


def _more_bits(layer: int, layers: int) -> bool:
    """llama.cpp's `use_more_bits`: the first and last eighth and every third layer between."""
    return layer < layers // 8 or layer >= 7 * layers // 8 or (layer - layers // 8) % 3 == 2


def tensor_type(file_type: str, name: str, shape: tuple[int, ...], config: ModelConfig) -> T:
    """The GGUF format of one tensor (transformers name, [rows, columns]) in a file of `file_type`."""
    default, _ = FILE_TYPES[file_type]
    if len(shape) < 2:
        return T.F32
    if default in FLOAT_TYPES:
        return default
    chosen = default
    head = name == "lm_head.weight" or (config.tie_word_embeddings and name == "model.embed_tokens.weight")
    layer = int(name.split(".")[2]) if name.startswith("model.layers.") else -1
    layers = config.num_layers
    if head:
        chosen = T.Q8_0 if default == T.Q8_0 or shape[1] % 256 else T.Q6_K
    elif name.endswith("v_proj.weight"):
        if file_type in ("q4_k_m", "q5_k_m") and _more_bits(layer, layers):
            chosen = T.Q6_K
        elif file_type == "q4_k_s" and layer < 4:
            chosen = T.Q5_K
    elif name.endswith("down_proj.weight"):
        if file_type in ("q4_k_m", "q5_k_m") and _more_bits(layer, layers):
            chosen = T.Q6_K
        elif file_type == "q4_k_s" and layer < layers // 8:
            chosen = T.Q5_K
    if shape[1] % BLOCK_SIZES[chosen]:
        chosen = K_FALLBACKS.get(chosen, chosen)
        if shape[1] % BLOCK_SIZES[chosen]:
            chosen = T.F16
    return chosen


# --- metadata --------------------------------------------------------------------------------------


def source_gguf(bundle: ModelBundle) -> Path | None:
    """The GGUF this model was converted from or descends from (its tokenizer is copied), if any."""
    candidates = [bundle.source, bundle.path]
    candidates += [artifact.path for artifact in registry.lineage(bundle.lineage_id())]
    for path in candidates:
        if path is None:
            continue
        path = Path(path)
        if path.is_file() and path.suffix == ".gguf":
            return path
        marker = path / "lmstack_source.json"
        if marker.is_file():
            found = Path(json.loads(marker.read_text())["gguf"])
            if found.is_file():
                return found
    return None


def _value_type(value: Any) -> GGUFValueType:
    if isinstance(value, bool):
        return GGUFValueType.BOOL
    if isinstance(value, int):
        return GGUFValueType.UINT32 if value >= 0 else GGUFValueType.INT32
    if isinstance(value, float):
        return GGUFValueType.FLOAT32
    return GGUFValueType.STRING


def _add_value(writer: GGUFWriter, key: str, value: Any) -> None:
    if isinstance(value, list):
        element = GGUFValueType.INT32 if value and isinstance(value[0], int) and not isinstance(value[0], bool) \
            else _value_type(value[0]) if value else GGUFValueType.STRING
        writer.add_key_value(key, value, GGUFValueType.ARRAY, sub_type=element)
    else:
        writer.add_key_value(key, value, _value_type(value))


def tokenizer_metadata(tokenizer: Tokenizer, source: Path | None) -> dict[str, Any]:
    """`tokenizer.*` keys: the ancestor GGUF's, or a byte-level BPE built from tokenizer.json."""
    if source is not None:
        keys = {k: v for k, v in read_gguf(source).metadata.items() if k.startswith("tokenizer.")}
    else:
        keys = _bpe_metadata(tokenizer)
    keys.pop("tokenizer.chat_template", None)
    if tokenizer.chat_template:
        keys["tokenizer.chat_template"] = tokenizer.chat_template
    return keys


def _bpe_metadata(tokenizer: Tokenizer) -> dict[str, Any]:
    spec = json.loads(tokenizer.backend.to_str())
    model = spec.get("model", {})
    if model.get("type") != "BPE" or "ByteLevel" not in json.dumps(spec.get("pre_tokenizer")):
        raise LmstackError("this model's tokenizer is not a byte-level BPE and it descends from no GGUF; "
                           "GGUF export cannot write its vocabulary")
    vocab = tokenizer.backend.get_vocab(with_added_tokens=True)
    tokens = [""] * len(vocab)
    for piece, index in vocab.items():
        tokens[index] = piece
    added = {entry["id"]: entry for entry in spec.get("added_tokens", [])}
    types = [3 if added.get(i, {}).get("special") else 4 if i in added else 1 for i in range(len(tokens))]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    keys: dict[str, Any] = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "default",
                            "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.token_type": types,
                            "tokenizer.ggml.merges": merges, "tokenizer.ggml.add_bos_token": tokenizer.add_bos_token}
    for key, token_id in (("bos", tokenizer.bos_token_id), ("eos", tokenizer.eos_token_id),
                          ("padding", tokenizer.pad_token_id)):
        if token_id is not None:
            keys[f"tokenizer.ggml.{key}_token_id"] = token_id
    return keys


def architecture_metadata(config: ModelConfig) -> dict[str, Any]:
    arch = ARCHITECTURES[config.family]
    keys: dict[str, Any] = {
        "context_length": config.max_position_embeddings, "embedding_length": config.hidden_size,
        "block_count": config.num_layers, "feed_forward_length": config.intermediate_size,
        "attention.head_count": config.num_heads, "attention.head_count_kv": config.num_kv_heads,
        "attention.layer_norm_rms_epsilon": float(config.rms_norm_eps), "rope.freq_base": float(config.rope_theta),
        "vocab_size": config.vocab_size,
    }
    if config.head_dim * config.num_heads != config.hidden_size or config.family == "gemma3":
        keys |= {"attention.key_length": config.head_dim, "attention.value_length": config.head_dim}
    if arch == "llama":
        keys["rope.dimension_count"] = config.head_dim
    if config.sliding_window is not None and config.family == "gemma3":
        keys["attention.sliding_window"] = config.sliding_window
    if config.final_logit_softcapping:
        keys["final_logit_softcapping"] = float(config.final_logit_softcapping)
    scaling = config.rope_scaling or {}
    if scaling.get("rope_type") in ("linear", "yarn"):
        keys |= {"rope.scaling.type": scaling["rope_type"], "rope.scaling.factor": float(scaling["factor"])}
        if scaling.get("original_max_position_embeddings"):
            keys["rope.scaling.original_context_length"] = scaling["original_max_position_embeddings"]
    elif scaling:
        raise LmstackError(f"GGUF export does not support rope scaling '{scaling.get('rope_type')}' yet")
    return {f"{arch}.{key}": value for key, value in keys.items()}


# --- the export ------------------------------------------------------------------------------------


@dataclass
class GgufExport:
    type: str
    path: Path
    registry_id: str
    tensor_types: dict[str, int]  # format name -> number of tensors stored in it


def dense_model(bundle: ModelBundle) -> torch.nn.Module:
    """The bundle's transformer with float weights everywhere: adapters merged, quantized
    layers dequantized (re-exporting a quantized model requantizes what it holds)."""
    model = merged_model(bundle.model).float()
    for name, layer in list(model.named_modules()):
        if isinstance(layer, QuantizedLinear):
            dense = torch.nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
            dense.weight.data = layer.dequantized_weight().float()
            if layer.bias is not None:
                dense.bias.data = layer.bias.float()
            model.set_submodule(name, dense)
    if isinstance(model.model.embed_tokens, QuantizedEmbedding):
        model.model.embed_tokens = torch.nn.Embedding.from_pretrained(model.lm_head.weight.data, freeze=True)
        model.tie_weights()
    return model


def export_gguf(model: str, out_dir: str | Path, types: list[str], *, method: str = "rtn",
                calib: str | None = None, samples: int = 32, seq_len: int = 256, damp: float = 0.01,
                act_order: bool = True, overwrite: bool = False, device: str | None = None) -> list[GgufExport]:
    """Write `<model>-<type>.gguf` into `out_dir` for each type; each recorded in the registry."""
    types = check_types(types)
    if method not in GGUF_METHODS:
        raise LmstackError(f"unknown GGUF export method '{method}'; use one of {', '.join(GGUF_METHODS)}")
    settings = _engine_settings(method, calib, samples, seq_len, damp, act_order)
    out_dir = check_output(out_dir, overwrite=overwrite)
    calibration = read_calibration_source(settings.calib) if settings.calibrated else None
    bundle = load_model(model, device=device, dtype="fp32")
    dense = dense_model(bundle)
    windows = None
    if settings.calibrated:
        text = calibration_text(calibration, bundle.tokenizer)
        windows = calibration_windows(text, bundle.tokenizer, samples=samples, seq_len=seq_len).to(bundle.device)
    source = source_gguf(bundle)
    metadata = architecture_metadata(bundle.config) | tokenizer_metadata(bundle.tokenizer, source)
    exports = []
    for file_type in types:
        path = out_dir / f"{bundle.name}-{file_type}.gguf"
        counts = write_gguf(path, dense, bundle, file_type, settings, windows, metadata)
        recipe = {"type": file_type, "method": method} | (
            {"calib": settings.calib, "samples": samples, "seq_len": seq_len} if settings.calibrated else {}) | (
            {"damp": damp, "act_order": act_order} if method == "gptq" else {})
        artifact = registry.record(
            "model", path, name=path.stem, operation="export-gguf", parents=[bundle.lineage_id()], recipe=recipe,
            datasets=[dataset_reference(settings.calib)] if settings.calibrated else [],
            metadata={"tensor_types": counts, "bytes": path.stat().st_size})
        exports.append(GgufExport(file_type, path, artifact, counts))
    return exports


def _engine_settings(method: str, calib: str | None, samples: int, seq_len: int, damp: float,
                     act_order: bool) -> QuantSettings:
    """The quantization engine's settings for a GGUF method (`rtn` searches no clipping: llama.cpp's bytes)."""
    values: dict[str, Any] = {"method": method, "samples": samples, "seq_len": seq_len, "damp": damp,
                              "act_order": act_order}
    if calib:
        values["calib"] = calib
    return parse_settings(**values)


def write_gguf(path: Path, dense: torch.nn.Module, bundle: ModelBundle, file_type: str, settings: QuantSettings,
               windows: torch.Tensor | None, metadata: dict[str, Any]) -> dict[str, int]:
    """One GGUF file, written atomically; how many tensors each format holds."""
    config = bundle.config
    model = copy.deepcopy(dense)  # quantization moves weights (AWQ rescales norms): keep `dense` intact
    shapes = {name: tuple(p.shape) for name, p in model.state_dict().items()}
    types = {name: tensor_type(file_type, name, shape, config) for name, shape in shapes.items()}
    grid_for: Callable[[str], Any] = lambda layer: GGUF_GRIDS.get(types.get(f"{layer}.weight"))
    chosen = quantize_weights(model, settings, grid_for, windows)
    state = model.state_dict()
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
        if "lm_head" in chosen:  # the tied embedding is stored as the head was quantized
            chosen["model.embed_tokens"] = chosen.pop("lm_head")
    counts: dict[str, int] = {}
    with atomic_path(path) as tmp:
        writer = GGUFWriter(tmp, ARCHITECTURES[config.family])
        writer.add_name(bundle.name)
        writer.add_file_type(int(FILE_TYPES[file_type][1]))
        writer.add_quantization_version(2)
        for key, value in metadata.items():
            _add_value(writer, key, value)
        for name, tensor in state.items():
            layer = name.removesuffix(".weight")
            qtype = types[name]
            if layer in chosen and name.endswith(".weight"):
                data = pack(qtype, chosen[layer][0])
            elif qtype not in FLOAT_TYPES:  # an untied embedding: no layer reads it, round to nearest
                data = pack(qtype, quantize_rtn(tensor.detach().cpu().float(), GGUF_GRIDS[qtype]))
            else:
                data = _float_data(tensor.detach().cpu().float().numpy(), qtype)
            writer.add_tensor(gguf_name(name, config.family), to_gguf_layout(name, data, config), raw_dtype=qtype)
            counts[qtype.name] = counts.get(qtype.name, 0) + 1
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return counts


def _float_data(array: np.ndarray, qtype: T) -> np.ndarray:
    if qtype == T.F32:
        return np.ascontiguousarray(array, dtype=np.float32)
    if qtype == T.F16:
        return array.astype(np.float16)
    from gguf.quants import quantize

    return quantize(array, qtype)  # BF16, as bytes

"""`format = gguf(quant = "q8_0" | "f16")`: a llama-family model as one llama.cpp GGUF file.

In:  a loaded (merged) LlamaForCausalLM, its tokenizer, the quantisation and the output
     path. Out: the GGUF file, written with the `gguf` package's GGUFWriter the way
     llama.cpp's convert_hf_to_gguf.py lays out a llama: llama.* hyperparameters, tensors
     under llama.cpp names (gguf's tensor name map), q/k projections permuted to
     llama.cpp's rotary layout, 1-D tensors (norms) in f32, the rest in f16 or q8_0 (a
     matrix whose rows do not fill q8_0's 32-value blocks falls back to f16, as
     llama.cpp's converter does), and the byte-level BPE tokenizer as a "gpt2" vocab.
     transformers reads it back with `from_pretrained(folder, gguf_file=...)`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ftlang.stdlib.spec import Attr, Signature, StepError

FORMATS = {
    "safetensors": Signature("safetensors", (), "Safetensors weights, config and tokenizer: a folder "
                             "transformers loads."),
    "gguf": Signature("gguf", (
        Attr("quant", "enum", "q8_0", "the tensor type of the weight matrices", choices=("q8_0", "f16")),
    ), "One llama.cpp GGUF file (llama-family models), plus the tokenizer files; transformers "
       "loads it with from_pretrained(folder, gguf_file=...).", positional=("quant",)),
}

SUPPORTED = ("llama",)


def file_name(quant: str) -> str:
    return f"model-{quant}.gguf"


def _permute(w: Any, n_head: int, n_head_kv: int | None) -> Any:
    # llama.cpp's converter (LlamaModel.permute): HF's rotate-half layout -> interleaved pairs.
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def _tokenizer(writer: Any, tokenizer: Any) -> None:
    """A byte-level BPE (ftlang's tiny tokenizer, GPT-2 style ones) as llama.cpp's "gpt2" vocab."""
    import gguf

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model = spec.get("model") or {}
    if model.get("type") != "BPE":
        raise StepError(f"GGUF export writes byte-level BPE tokenizers; this one is {model.get('type')}",
                        hint="export with format = safetensors and convert with llama.cpp's converter")
    vocab = tokenizer.get_vocab()
    by_id = sorted(vocab.items(), key=lambda kv: kv[1])
    if [i for _, i in by_id] != list(range(len(by_id))):
        raise StepError("the tokenizer's ids are not contiguous: it cannot be written as a GGUF vocab")
    special = set(tokenizer.all_special_ids) | {t["id"] for t in spec.get("added_tokens") or []}
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list([t for t, _ in by_id])
    writer.add_token_types([int(gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL)
                            for _, i in by_id])
    writer.add_token_merges(merges)
    for name, add in (("bos", writer.add_bos_token_id), ("eos", writer.add_eos_token_id),
                      ("pad", writer.add_pad_token_id)):
        tid = getattr(tokenizer, f"{name}_token_id")
        if tid is not None:
            add(int(tid))
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, str) and template:
        writer.add_chat_template(template)


def write(lm: Any, tokenizer: Any, path: Path, quant: str, *, name: str) -> dict[str, int]:
    """Writes the GGUF file; returns how many tensors went in each type."""
    import gguf
    import numpy as np

    cfg = lm.config
    if cfg.model_type not in SUPPORTED:
        raise StepError(f"GGUF export supports llama-family models; this one is {cfg.model_type}",
                        hint="export with format = safetensors (the default)")
    for flag in ("attention_bias", "mlp_bias"):
        if getattr(cfg, flag, False):
            raise StepError(f"GGUF export: a llama with {flag} = true has tensors llama.cpp's llama lacks")
    rope = getattr(cfg, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise StepError(f"GGUF export: rope type {rope.get('rope_type')!r} is not written yet",
                        hint="export with format = safetensors")
    theta = float(rope.get("rope_theta") or getattr(cfg, "rope_theta", 10000.0))
    n_head = int(cfg.num_attention_heads)
    n_kv = int(getattr(cfg, "num_key_value_heads", None) or n_head)
    head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // n_head)

    qtype = {"q8_0": gguf.GGMLQuantizationType.Q8_0, "f16": gguf.GGMLQuantizationType.F16}[quant]
    ftype = {"q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "f16": gguf.LlamaFileType.MOSTLY_F16}[quant]
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(name)
    writer.add_context_length(int(cfg.max_position_embeddings))
    writer.add_embedding_length(int(cfg.hidden_size))
    writer.add_block_count(int(cfg.num_hidden_layers))
    writer.add_feed_forward_length(int(cfg.intermediate_size))
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(theta)
    writer.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    writer.add_vocab_size(int(cfg.vocab_size))
    writer.add_file_type(int(ftype))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _tokenizer(writer, tokenizer)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, int(cfg.num_hidden_layers))
    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    counts: dict[str, int] = {}
    for hf_name, t in lm.state_dict().items():
        if tied and hf_name == "lm_head.weight":
            continue  # no output.weight: readers tie it to the embeddings, as the model does
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue
        new = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise StepError(f"GGUF export: no llama.cpp name for the tensor {hf_name}")
        data = t.detach().to("cpu").float().numpy()
        if hf_name.endswith("q_proj.weight"):
            data = _permute(data, n_head, n_head)
        elif hf_name.endswith("k_proj.weight"):
            data = _permute(data, n_head, n_kv)
        if data.ndim <= 1:
            kind = gguf.GGMLQuantizationType.F32
        elif qtype == gguf.GGMLQuantizationType.Q8_0 and data.shape[-1] % 32 != 0:
            kind = gguf.GGMLQuantizationType.F16  # llama.cpp's converter falls back the same way
        else:
            kind = qtype
        if kind == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(new, np.ascontiguousarray(data, dtype=np.float32))
        elif kind == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(new, np.ascontiguousarray(data, dtype=np.float16))
        else:
            writer.add_tensor(new, gguf.quants.quantize(np.ascontiguousarray(data, dtype=np.float32), kind),
                              raw_dtype=kind)
        counts[kind.name.lower()] = counts.get(kind.name.lower(), 0) + 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return counts

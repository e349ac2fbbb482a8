"""GGUF export of llama-family models (issue 11 item 5): written with the `gguf` package's
writer, read back with transformers' GGUF loader, logits compared with the source model.

Tolerances, on max |logit difference| / max |logit| of a tiny llama (2 layers, hidden 64):
  f16   1e-3  (fp16 rounding of every matrix)
  q8_0  3e-2  (8-bit blocks of 32 values with an fp16 scale)
(the measured values are printed: pytest -s tests/test_gguf_export.py -k logits)
and the greedy next token must agree at every position for both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ftlang.stdlib import gguf_export
from ftlang.stdlib.spec import StepError

TOLERANCE = {"f16": 1e-3, "q8_0": 3e-2}


def tiny_llama(*, tied: bool, kv_heads: int = 2, hidden: int = 64) -> tuple[Any, Any]:
    import torch
    from ftlang.stdlib.model import train_tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = train_tokenizer([f"row {i} says hello world number {i * 7}" for i in range(200)], 300)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=kv_heads, intermediate_size=2 * hidden, max_position_embeddings=64,
                      rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, tie_word_embeddings=tied,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    lm = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # a spread of weights, not only the init's small ones
        for p in lm.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return lm, tok


@pytest.mark.parametrize("quant", ["f16", "q8_0"])
@pytest.mark.parametrize("tied, kv_heads", [(True, 2), (False, 4)])
def test_gguf_logits_match_the_source_model(tmp_path: Path, quant: str, tied: bool, kv_heads: int) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lm, tok = tiny_llama(tied=tied, kv_heads=kv_heads)
    name = gguf_export.file_name(quant)
    counts = gguf_export.write(lm, tok, tmp_path / name, quant, name="tiny")
    assert counts[quant] == (15 if tied else 16) and counts["f32"] == 5  # norms stay f32
    back = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=name, dtype=torch.float32).eval()
    assert back.config.num_key_value_heads == kv_heads and back.config.tie_word_embeddings == tied
    text = "row 5 says hello world number 35"
    ids = torch.tensor([tok(text)["input_ids"]])
    with torch.no_grad():
        ref, got = lm(ids).logits, back(ids).logits
    diff = ((got - ref).abs().max() / ref.abs().max()).item()
    print(f"gguf {quant} tied={tied} kv_heads={kv_heads}: max |logit diff| / max |logit| = {diff:.2e}")
    assert diff < TOLERANCE[quant], diff
    assert torch.equal(got.argmax(-1), ref.argmax(-1))
    # The vocab travels in the file, id for id, and decodes the source's ids to the same text.
    # (Pre-tokenisation rules such as one digit per token have no GGUF field: llama.cpp
    # knows fixed presets only; the exported folder carries tokenizer.json for that.)
    gguf_tok = AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=name)
    n = len(tok)
    assert gguf_tok.convert_ids_to_tokens(list(range(n))) == tok.convert_ids_to_tokens(list(range(n)))
    assert gguf_tok.decode(ids[0].tolist()).strip() == text
    assert gguf_tok.eos_token_id == tok.eos_token_id


def test_q8_0_falls_back_to_f16_when_rows_do_not_fill_blocks(tmp_path: Path) -> None:
    import gguf

    lm, tok = tiny_llama(tied=True, hidden=48)  # rows of 48 values: not a multiple of 32
    counts = gguf_export.write(lm, tok, tmp_path / "m.gguf", "q8_0", name="tiny")
    reader = gguf.GGUFReader(str(tmp_path / "m.gguf"))
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_q.weight"] == "F16" and types["blk.0.ffn_down.weight"] == "Q8_0"  # 96-wide rows
    assert counts["f16"] >= 1 and counts["q8_0"] >= 1


def test_non_llama_is_refused(tmp_path: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    lm = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=100))
    with pytest.raises(StepError, match="llama-family"):
        gguf_export.write(lm, None, tmp_path / "m.gguf", "f16", name="x")
    assert not (tmp_path / "m.gguf").exists()

"""A tiny GGUF checkpoint built in the test, and the short name that prepares it, for tests of
`bandpo.training.pretrained` that convert for real (transformers' GGUF loader) without the 98 MB download.

Test files import it as ``from gguf_helpers import ...`` (``tests/`` is on ``sys.path``, see process_helpers).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from bandpo.training.pretrained import PretrainedSource


def write_tiny_llama_gguf(path: Path) -> None:
    """A 3k-parameter Llama in GGUF (float32 tensors, a byte-level BPE vocabulary and a ChatML template)."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    vocab = [
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        *(chr(c) for c in range(97, 123)),
        "Ġ",
        "Ġa",
        "ab",
    ]
    dim, hidden, heads = 16, 32, 2
    writer.add_context_length(64)
    writer.add_embedding_length(dim)
    writer.add_block_count(1)
    writer.add_feed_forward_length(hidden)
    writer.add_head_count(heads)
    writer.add_head_count_kv(heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(dim // heads)
    writer.add_vocab_size(len(vocab))
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(vocab)
    writer.add_token_types([3, 3, 3] + [1] * (len(vocab) - 3))
    writer.add_token_merges(["Ġ a", "a b"])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_chat_template(
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    rng = np.random.default_rng(0)

    def weights(*shape: int):
        return (rng.standard_normal(shape) * 0.1).astype(np.float32)

    writer.add_tensor("token_embd.weight", weights(len(vocab), dim))
    for name, shape in [
        ("attn_q", (dim, dim)),
        ("attn_k", (dim, dim)),
        ("attn_v", (dim, dim)),
        ("attn_output", (dim, dim)),
        ("ffn_gate", (hidden, dim)),
        ("ffn_up", (hidden, dim)),
        ("ffn_down", (dim, hidden)),
    ]:
        writer.add_tensor(f"blk.0.{name}.weight", weights(*shape))
    for name in ("blk.0.attn_norm.weight", "blk.0.ffn_norm.weight", "output_norm.weight"):
        writer.add_tensor(name, np.ones(dim, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def tiny_source(gguf_path: Path, name: str = "tiny-model") -> PretrainedSource:
    """A `PretrainedSource` whose recorded size and SHA-256 are those of the GGUF at `gguf_path`."""
    data = gguf_path.read_bytes()
    return PretrainedSource(
        name=name,
        package="bandpo-tiny-model",
        version="1.0",
        member="bandpo_tiny_model/tiny.gguf",
        gguf_bytes=len(data),
        gguf_sha256=hashlib.sha256(data).hexdigest(),
        license="Apache-2.0",
        description="a 3k-parameter Llama built by the tests",
        hub_id="example/tiny-model",
    )

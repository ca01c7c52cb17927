"""TOML fragments shared by the sweep tests: one small simulated rung and a target.

Plain text without braces, so a test may splice them into a template it later ``.format``s.
"""

from __future__ import annotations


def rung(name: str = "r0", *, d_model: int = 64, n_heads: int = 2, d_expert: int = 128,
         tokens: int = 200_000) -> str:
    """One ``[[ladder.rungs]]`` table: 2 layers, head_dim 32, 4 experts top-1, batch 8."""
    return f"""[[ladder.rungs]]
name = "{name}"
d_model = {d_model}
n_layers = 2
n_heads = {n_heads}
head_dim = 32
n_experts = 4
top_k = 1
d_expert = {d_expert}
tokens = {tokens}
batch_size = 8
"""


TARGET = """[target]
d_model = 512
n_layers = 8
n_heads = 8
head_dim = 64
n_experts = 16
top_k = 2
d_expert = 1024
tokens = 1000000000
"""

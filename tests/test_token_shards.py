"""Token shards (``proxy.data.shards``): uint16 and uint32 shards round-trip, documents never
cross the split, the mixture's frequencies match its weights, a seed fixes the batches, and the
two frameworks train on the same batches to the same losses (a vocabulary beyond bytes)."""

from __future__ import annotations

import numpy as np
import pytest

from proxy.data.shards import ShardDomain, TokenShardData, open_shard, split_point

EOD = 0


def _documents(rng, n_docs: int, first_id: int, vocab: int) -> list[np.ndarray]:
    """Documents whose every token is the document's id (so a window tells which documents it
    read), ids from ``first_id``, lengths 20-200, each closed by EOD."""
    docs = []
    for j in range(n_docs):
        doc_id = first_id + j % (vocab - first_id)
        docs.append(np.concatenate([np.full(int(rng.integers(20, 200)), doc_id), [EOD]]))
    return docs


def _write(path, docs, dtype):
    tokens = np.concatenate(docs).astype(dtype)
    if path.suffix == ".bin":
        tokens.tofile(path)
    else:
        np.save(path, tokens)
    return tokens


@pytest.mark.parametrize("suffix,dtype,vocab", [(".bin", "uint16", 5000), (".npy", "uint32", 70000)])
def test_shards_round_trip_and_split_at_a_document_boundary(tmp_path, suffix, dtype, vocab):
    rng = np.random.default_rng(0)
    docs = _documents(rng, 300, 1 if vocab < 65536 else 65536, vocab)
    tokens = _write(tmp_path / f"a{suffix}", docs, dtype)
    opened = open_shard(tmp_path / f"a{suffix}", dtype)
    assert isinstance(opened, np.memmap)           # mapped, not read into memory
    np.testing.assert_array_equal(np.asarray(opened), tokens)
    cut = split_point(opened, EOD, 0.1)
    assert tokens[cut - 1] == EOD                      # the split is just after an end of document
    assert 0.9 * tokens.size <= cut <= 0.9 * tokens.size + 201
    data = TokenShardData([ShardDomain("a", (str(tmp_path / f"a{suffix}"),), dtype, EOD)], vocab)
    shard = data.shards["a"][0]
    np.testing.assert_array_equal(np.concatenate([shard.tokens[:shard.cut], shard.tokens[shard.cut:]]), tokens)
    if dtype == "uint32":
        assert int(tokens.max()) >= 65536                # ids a uint16 shard could not hold


def test_documents_never_cross_the_split(tmp_path):
    rng = np.random.default_rng(1)
    docs = _documents(rng, 400, 1, 5000)
    tokens = _write(tmp_path / "a.bin", docs, "uint16")
    data = TokenShardData([ShardDomain("a", (str(tmp_path / "a.bin"),), "uint16", EOD)], 5000, val_fraction=0.2)
    cut = data.shards["a"][0].cut
    train_ids, val_ids = set(tokens[:cut].tolist()) - {EOD}, set(tokens[cut:].tolist()) - {EOD}
    assert not train_ids & val_ids                     # each document id lives on one side
    stream = data.batches(3, 64, 32)
    seen = {int(t) for _ in range(20) for t in np.unique(next(stream))} - {EOD}
    assert seen <= train_ids and len(seen) > 50
    evals = {int(t) for t in np.unique(data.eval_sets(32, 8, 4)["a"])} - {EOD}
    assert evals <= val_ids and len(evals) > 5


def test_the_mixture_draws_domains_by_their_weights_and_shards_by_their_size(tmp_path):
    rng = np.random.default_rng(2)
    domains = []
    for i, name in enumerate(("code", "prose", "math")):
        paths = []
        for s in range(2):   # two shards a domain, one twice the other's size
            docs = [np.concatenate([np.full(int(rng.integers(50, 100)), 1000 * (i + 1) + s), [EOD]])
                    for _ in range(40 * (s + 1))]
            _write(tmp_path / f"{name}{s}.bin", docs, "uint16")
            paths.append(str(tmp_path / f"{name}{s}.bin"))
        domains.append(ShardDomain(name, tuple(paths), "uint16", EOD))
    weights = {"code": 0.5, "prose": 0.3, "math": 0.2}
    data = TokenShardData(domains, 4000, train_mix=weights)
    stream = data.batches(0, 500, 16)
    rows = np.concatenate([next(stream) for _ in range(8)])          # 4000 rows
    label = np.array([max(set(r.tolist()) - {EOD}) for r in rows])   # the row's shard id
    n = len(rows)
    for i, (name, w) in enumerate(weights.items()):
        share = np.isin(label, [1000 * (i + 1), 1000 * (i + 1) + 1]).mean()
        assert abs(share - w) <= 3 * np.sqrt(w * (1 - w) / n), name
        big = (label == 1000 * (i + 1) + 1).sum() / max(1, np.isin(label, [1000 * (i + 1), 1000 * (i + 1) + 1]).sum())
        assert 0.55 <= big <= 0.78, name               # ~2/3 from the shard with twice the tokens


def test_a_seed_fixes_the_batches(tmp_path):
    _write(tmp_path / "a.bin", _documents(np.random.default_rng(3), 200, 1, 300), "uint16")
    data = TokenShardData([ShardDomain("a", (str(tmp_path / "a.bin"),))], 300)
    first = [next(data.batches(5, 4, 16)) for _ in range(2)]
    np.testing.assert_array_equal(first[0], first[1])
    assert not np.array_equal(next(data.batches(5, 4, 16)), next(data.batches(6, 4, 16)))


def test_bad_shards_and_ids_are_named(tmp_path):
    (tmp_path / "odd.bin").write_bytes(b"\x01\x02\x03")
    with pytest.raises(ValueError, match="not a whole number of uint16 tokens"):
        open_shard(tmp_path / "odd.bin", "uint16")
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(ValueError, match="must be a .bin or a .npy"):
        open_shard(tmp_path / "x.txt", "uint16")
    np.save(tmp_path / "f.npy", np.zeros(10, np.float32))
    with pytest.raises(ValueError, match="1-D uint32 array, got dtype float32"):
        open_shard(tmp_path / "f.npy", "uint32")
    _write(tmp_path / "big.bin", _documents(np.random.default_rng(4), 100, 250, 900), "uint16")   # ids 250-349
    data = TokenShardData([ShardDomain("a", (str(tmp_path / "big.bin"),))], 300)
    with pytest.raises(ValueError, match="holds token id .* not below vocab_size 300"):
        for _ in range(50):
            next(data.batches(0, 16, 16))
    (tmp_path / "noeod.bin").write_bytes(np.full(1000, 7, np.uint16).tobytes())
    with pytest.raises(ValueError, match="no validation document"):
        TokenShardData([ShardDomain("a", (str(tmp_path / "noeod.bin"),))], 300)


def test_both_frameworks_train_on_the_same_shard_batches_to_the_same_losses(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("jax")
    from proxy.backends.jax import trainer as TJ
    from proxy.backends.torch import trainer as TT
    from proxy.config import ModelConfig
    from proxy.hparams import TrainHParams

    rng = np.random.default_rng(5)
    docs = [np.concatenate([rng.integers(1, 600, int(rng.integers(30, 90))), [EOD]]) for _ in range(300)]
    _write(tmp_path / "a.bin", docs, "uint16")
    data = TokenShardData([ShardDomain("a", (str(tmp_path / "a.bin"),))], 600)
    config = ModelConfig(d_model=32, n_layers=2, n_heads=2, head_dim=16, n_experts=4, top_k=2, d_expert=32,
                         seq_len=16, vocab_size=600)
    hp = TrainHParams(lr=3e-3, batch_size=4, tokens=6 * 4 * 16, eval_batches=2, log_points=8)
    rt = TT.train(config, hp, data, 0, device="cpu")
    rj = TJ.train(config, hp, data, 0, device="cpu")
    lt, lj = np.array([v for _, v in rt.loss_curve]), np.array([v for _, v in rj.loss_curve])
    assert lt.size == 6 and np.max(np.abs(lt - lj)) / np.max(np.abs(lt)) <= 1e-5
    assert abs(rt.final_loss - rj.final_loss) <= 1e-5 * rt.final_loss
    assert lt[0] == pytest.approx(np.log(600), rel=0.1)   # a 600-token vocabulary at the start


def test_an_experiment_trains_on_shard_domains(tmp_path):
    """``[data.shards.<domain>]`` in an experiment file: the rungs take the tokenizer's
    vocabulary, a trial trains on the shards and is evaluated per shard domain; bad tables are
    named."""
    pytest.importorskip("torch")
    from proxy.sweep.experiment import ExperimentError, load_experiment
    from proxy.sweep.runner import run_trial
    from tests.sweep_toml import rung

    rng = np.random.default_rng(6)
    for name, base in (("web", 1), ("code", 300)):
        for s in range(2):
            docs = [np.concatenate([rng.integers(base, base + 299, int(rng.integers(30, 90))), [EOD]])
                    for _ in range(150)]
            _write(tmp_path / f"{name}_{s}.bin", docs, "uint16")
    text = f"""[experiment]
name = "shards"
backend = "torch"
storage = "sqlite:///{tmp_path}/trials.db"

{rung(d_model=32, d_expert=32, tokens=4 * 8 * 128)}
[search.box]
lr = {{ low = 1e-3, high = 1e-2, log = true }}

[data]
vocab_size = 600
train_mix = {{ web = 3, code = 1 }}

[data.shards.web]
paths = "web_*.bin"
eod_id = 0

[data.shards.code]
paths = ["code_0.bin", "code_1.bin"]
"""
    (tmp_path / "exp.toml").write_text(text)
    exp = load_experiment(tmp_path / "exp.toml")
    assert exp.data.domains == ("web", "code") and len(exp.data.shards["web"][0]) == 2
    assert exp.rungs[0].config.vocab_size == 600
    attrs, diverged = run_trial(exp, exp.rungs[0], {"lr": 3e-3})
    assert not diverged and set(attrs["eval_loss_by_domain"]) == {"web", "code"}
    assert 0 < attrs["final_loss"] < np.log(600) + 0.5
    for bad, message in ((text.replace("vocab_size = 600\n", ""), "data.vocab_size: is required"),
                         (text.replace('"web_*.bin"', '"nothing_*.bin"'), "data.shards.web.paths: matches no file"),
                         (text.replace("eod_id = 0", "eod_id = 700"), "eod_id: must be below data.vocab_size")):
        (tmp_path / "bad.toml").write_text(bad)
        with pytest.raises(ExperimentError, match=message):
            load_experiment(tmp_path / "bad.toml")

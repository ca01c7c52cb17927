"""proxy.data: document-level splits, mixture sampling against known truth, and input checks."""

from __future__ import annotations

import datetime
import hashlib
import math
import pickle
import re
import time
from decimal import Decimal

import numpy as np
import pytest

from proxy import data as D


@pytest.fixture(scope="module")
def corpus() -> D.Corpus:
    return D.load_corpus()


def _letters_folder(path, docs: dict[str, bytes]):
    path.mkdir()
    for name, text in docs.items():
        (path / name).write_bytes(text)
    return path


@pytest.fixture()
def tagged(tmp_path) -> D.MixtureData:
    """Three user domains whose bytes are disjoint alphabets, so every sampled byte names its domain."""
    users = {}
    for domain, alphabet in (("upper", b"ABCDEF"), ("lower", b"abcdef"), ("digit", b"012345")):
        rng = np.random.default_rng(len(users))
        docs = {f"d{i}.txt": rng.choice(list(alphabet), size=200 + 37 * i).astype(np.uint8).tobytes() for i in range(12)}
        users[domain] = _letters_folder(tmp_path / domain, docs)
    corpus = D.load_corpus((), user_domains=users)
    return D.MixtureData(corpus, {"upper": 0.6, "lower": 0.3, "digit": 0.1}, {"upper": 1.0})


def _row_domains(rows: np.ndarray) -> np.ndarray:
    first = np.where(rows[:, 0] == 0, rows[:, 1], rows[:, 0])   # a row may start on a separator
    return np.select([(first >= 65) & (first <= 70), (first >= 97) & (first <= 102)], [0, 1], 2)


def test_splits_are_disjoint_by_content_across_all_domains(corpus):
    def digests(split):
        return {hashlib.sha256(doc.tobytes()).hexdigest() for docs in split.values() for doc in docs}

    train, val = digests(corpus.train), digests(corpus.val)
    assert train and val and not (train & val)
    for domain in D.BUILTIN_DOMAINS:
        n_val, n_all = len(corpus.val[domain]), len(corpus.val[domain]) + len(corpus.train[domain])
        assert 0.03 < n_val / n_all < 0.2, (domain, n_val, n_all)   # val_fraction 0.1 by hash
    # A module's source (code) and its docstrings (prose) share a split key, so docstring lines of
    # prose-val modules are absent from code-train (up to docstrings copied between modules), while
    # those of prose-train modules are often there (the code cap keeps ~40% of the stdlib).
    code_train = {line.strip().lstrip("rRuU").lstrip("\"'") for line in
                  corpus.buffer("code", "train").tobytes().decode("utf-8", "replace").splitlines()}

    def share_in_code_train(docs) -> float:
        found = total = 0
        for doc in docs:
            text = doc.tobytes().decode()
            if re.fullmatch(r"[\w.]+", text.split("\n", 1)[0]):         # a module's docstrings
                for part in text.split("\n\n")[1:]:
                    line = part.split("\n", 1)[0].split(": ", 1)[-1]     # first docstring line
                    if len(line) >= 60:
                        total += 1
                        found += line in code_train
        assert total > 300
        return found / total

    assert share_in_code_train(corpus.val["prose"]) < 0.03
    assert share_in_code_train(corpus.train["prose"]) > 0.2


def test_builtin_domains_are_sizeable_and_look_like_their_kind(corpus):
    stats = corpus.stats()
    for domain in D.BUILTIN_DOMAINS:
        assert stats[domain]["train_bytes"] + stats[domain]["val_bytes"] > 1_500_000, stats
        assert stats[domain]["train_bytes"] + stats[domain]["val_bytes"] <= 4_000_000, stats
    code = corpus.buffer("code").tobytes()
    prose = corpus.buffer("prose").tobytes()
    notes = corpus.buffer("notes").tobytes().decode()
    assert code.count(b"def ") / len(code) > 5 * prose.count(b"def ") / len(prose)
    assert b"import " in code and b"return " in code
    letters = sum(chr(b).isalpha() or b == 32 for b in prose[:200_000]) / 200_000
    assert letters > 0.75 and b" the " in prose
    dates = re.findall(r"^Date: (\d{4}-\d{2}-\d{2})$", notes, re.M)
    assert len(dates) > 1000 and all(datetime.date.fromisoformat(d) for d in dates[:50])
    for unit in (" g", " mL", " °C", " K", " kPa", "| time (min) |"):
        assert unit in notes


def test_notes_generator_is_pinned_and_its_arithmetic_is_exact():
    # Golden digest: the generator must give the same text on every machine and Python version.
    assert hashlib.sha256(D.notes_document(0).encode()).hexdigest() == (
        "2929f50cbbc97f59bed6f0c16ca53b3d2f365f65da56fd2510c7231fe2f36856")
    assert D.notes_document(7) == D.notes_document(7) != D.notes_document(8)
    num = r"(-?\d+\.\d\d)"
    checked = dict.fromkeys(("total", "change", "product", "mean", "kelvin"), 0)
    for i in range(60):
        for line in D.notes_document(i).splitlines():
            if m := re.fullmatch(r"Total [a-z]+: (.+) = " + num + r" (\S+)", line):
                terms = [t.rsplit(" ", 1) for t in m[1].split(" + ")]
                assert all(u == m[3] for _, u in terms)
                assert sum(Decimal(v) for v, _ in terms) == Decimal(m[2]), line
                checked["total"] += 1
            elif m := re.fullmatch(r"Change in [a-z]+: " + num + r" \S+ - " + num + r" \S+ = " + num + r" \S+", line):
                assert Decimal(m[1]) - Decimal(m[2]) == Decimal(m[3]), line
                checked["change"] += 1
            elif m := re.fullmatch(r"(\d+) x " + num + r" (\S+) = " + num + r" (\S+)", line):
                assert int(m[1]) * Decimal(m[2]) == Decimal(m[4]) and m[3] == m[5], line
                checked["product"] += 1
            elif m := re.fullmatch(r"Mean of (\d+) readings: \((.+)\) / (\d+) = (\d+\.\d{3})", line):
                values = [Decimal(v) for v in m[2].split(" + ")]
                assert len(values) == int(m[1]) == int(m[3])
                assert abs(sum(values) / len(values) - Decimal(m[4])) <= Decimal("0.0005"), line
                checked["mean"] += 1
            elif m := re.fullmatch(r"Bath temperature: " + num + r" °C = " + num + r" K", line):
                assert Decimal(m[1]) + Decimal("273.15") == Decimal(m[2]), line
                checked["kelvin"] += 1
    assert min(checked.values()) >= 20, checked


def test_mixture_frequencies_match_weights(tagged):
    rows = np.concatenate([b for _, b in zip(range(40), tagged.batches(seed=3, batch_size=500, seq_len=16))])
    counts = np.bincount(_row_domains(rows), minlength=3)
    n = rows.shape[0]
    for k, p in enumerate((0.6, 0.3, 0.1)):
        sigma = math.sqrt(n * p * (1 - p))
        assert abs(counts[k] - n * p) < 4 * sigma, (k, counts, n)
    # Every byte of a row (separators aside) comes from the row's own domain's train buffer.
    assert rows.dtype == np.int64 and rows.shape == (20_000, 17)
    domain_of_byte = np.select([(rows >= 65) & (rows <= 70), (rows >= 97) & (rows <= 102), rows == 0],
                               [0, 1, -1], 2)
    same = (domain_of_byte == _row_domains(rows)[:, None]) | (domain_of_byte == -1)
    assert same.all()


def test_documents_are_drawn_in_proportion_to_their_length():
    # Train documents of 300 and 2700 bytes: a window starts inside the long one with probability
    # 2700 / 3002 (the buffer is "a"*300, 0, "b"*2700, 0), on a separator with 2 / 3002.
    train = (np.full(300, ord("a"), np.uint8), np.full(2700, ord("b"), np.uint8))
    corpus = D.Corpus(train={"two": train}, val={"two": (np.full(50, ord("c"), np.uint8),)})
    mix = D.MixtureData(corpus, {"two": 1.0}, {"two": 1.0})
    rows = np.concatenate([b for _, b in zip(range(10), mix.batches(0, 1000, 4))])
    n = rows.shape[0]
    for token, p in ((ord("a"), 300 / 3002), (ord("b"), 2700 / 3002), (0, 2 / 3002)):
        count = int((rows[:, 0] == token).sum())
        assert abs(count - n * p) < 4 * math.sqrt(n * p * (1 - p)), (token, count, n * p)
    assert not (rows == ord("c")).any()


def test_same_seed_same_stream_and_different_seed_different(corpus):
    mix = D.MixtureData(corpus, {"code": 1, "prose": 1, "notes": 2}, {"code": 1})
    a = [b for _, b in zip(range(5), mix.batches(7, 8, 32))]
    b = [b for _, b in zip(range(5), mix.batches(7, 8, 32))]
    c = [b for _, b in zip(range(5), mix.batches(8, 8, 32))]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not any(np.array_equal(x, y) for x, y in zip(a, c))


def test_mixture_pickles_and_hashes(tagged):
    # Sweep workers may receive the data by pickle; the copy must sample the same stream.
    copy = pickle.loads(pickle.dumps(tagged))
    assert dict(copy.train_mix) == dict(tagged.train_mix) and hash(tagged) == hash(tagged)
    assert np.array_equal(next(copy.batches(5, 16, 8)), next(tagged.batches(5, 16, 8)))


def test_eval_sets_are_fixed_seed_independent_and_from_validation(corpus):
    mix = D.MixtureData(corpus, {"code": 1.0}, {"prose": 1.0})
    first = mix.eval_sets(seq_len=64, batch_size=4, n_batches=3)
    next(mix.batches(123, 4, 64))
    second = mix.eval_sets(seq_len=64, batch_size=4, n_batches=3)
    assert set(first) == set(D.BUILTIN_DOMAINS)
    for domain, rows in first.items():
        assert rows.shape == (12, 65) and rows.dtype == np.int64
        assert np.array_equal(rows, second[domain])
        val = corpus.buffer(domain, "val").tobytes()
        circular = val + val[:65]
        for row in rows:
            window = bytes(row.astype(np.uint8))
            assert window in circular
        assert len({bytes(r.astype(np.uint8)) for r in rows}) == rows.shape[0]   # no repeats


def test_overall_eval_loss_is_the_weighted_mean(corpus):
    mix = D.MixtureData(corpus, {"code": 1.0}, {"code": 1.0, "prose": 3.0})
    assert dict(mix.eval_mix) == {"code": 0.25, "prose": 0.75, "notes": 0.0}
    assert mix.overall_eval_loss({"code": 2.0, "prose": 1.0}) == pytest.approx(0.25 * 2.0 + 0.75 * 1.0)
    assert mix.overall_eval_loss({"code": 2.0, "prose": 1.0, "notes": 99.0}) == pytest.approx(1.25)
    assert math.isnan(mix.overall_eval_loss({"code": float("nan"), "prose": 1.0}))
    with pytest.raises(ValueError, match="'prose'"):
        mix.overall_eval_loss({"code": 2.0})
    with pytest.raises(ValueError, match="'wiki'"):
        mix.overall_eval_loss({"code": 2.0, "prose": 1.0, "wiki": 1.0})


def test_load_data_defaults_to_uniform_mixes_and_loading_is_cached():
    data = D.load_data()
    start = time.perf_counter()
    again = D.load_corpus(list(D.BUILTIN_DOMAINS))
    assert time.perf_counter() - start < 0.05 and data.corpus is again   # cached: no reload
    assert dict(data.train_mix) == dict(data.eval_mix) == {d: pytest.approx(1 / 3) for d in D.BUILTIN_DOMAINS}
    assert D.load_corpus(("notes",), max_bytes_per_domain=300_000).stats()["notes"]["train_bytes"] < 300_000


def test_user_folder_bin_and_npy_domains_load(tmp_path):
    folder = _letters_folder(tmp_path / "notes_fr", {f"{i}.md": f"Page {i}: été\n".encode() * (i + 1)
                                                     for i in range(20)})
    (folder / ".hidden").write_bytes(b"secret")
    (folder / "sub").mkdir()
    (folder / "sub" / "bad.txt").write_bytes(b"caf\xe9")          # not UTF-8: replaced, still loads
    docs = [b"first document", b"second", b"third one here", b"fourth"]
    (tmp_path / "tok.bin").write_bytes(b"\x00".join(docs) + b"\x00\x00")
    np.save(tmp_path / "tok.npy", np.frombuffer(b"\x00".join(docs), dtype=np.uint8))
    corpus = D.load_corpus(("code",), user_domains={"fr": folder, "bin": tmp_path / "tok.bin",
                                                    "npy": str(tmp_path / "tok.npy")},
                           max_bytes_per_domain=100_000)
    assert corpus.domains == ("code", "fr", "bin", "npy")
    fr = [d.tobytes() for d in corpus.train["fr"] + corpus.val["fr"]]
    assert len(fr) == 21 and b"secret" not in b"".join(fr) and "caf\ufffd".encode() in fr
    for name in ("bin", "npy"):
        got = sorted(d.tobytes() for d in corpus.train[name] + corpus.val[name])
        assert got == sorted(docs) and corpus.train[name] and corpus.val[name]


@pytest.mark.parametrize("call, message", [
    (lambda p: D.load_corpus(("code", "wiki")), r"unknown domain 'wiki'.*'code'"),
    (lambda p: D.load_corpus(("code", "code")), "'code' is listed twice"),
    (lambda p: D.load_corpus((), user_domains={"mine": p / "absent"}), r"'mine'.*does not exist"),
    (lambda p: D.load_corpus((), user_domains={"mine": p / "empty"}), "'mine'.*no non-empty files"),
    (lambda p: D.load_corpus((), user_domains={"mine": p / "zeros.bin"}), "'mine'.*no non-empty documents"),
    (lambda p: D.load_corpus((), user_domains={"mine": p / "one.bin"}), "'mine' has 1 document"),
    (lambda p: D.load_corpus((), user_domains={"mine": p / "x.csv"}), r"'mine'.*\.bin or a \.npy"),
    (lambda p: D.load_corpus((), user_domains={"mine": p / "f.npy"}), "'mine'.*uint8.*float64"),
    (lambda p: D.load_corpus((), user_domains={"code": p}), "'code' has the name of a built-in"),
    (lambda p: D.load_corpus(val_fraction=1.0), "val_fraction.*1.0"),
    (lambda p: D.load_corpus(max_bytes_per_domain=0), "max_bytes_per_domain.*0"),
    (lambda p: D.load_data(train_mix={"wiki": 1.0}), r"train_mix.*'wiki'"),
    (lambda p: D.load_data(train_mix={"code": -0.5}), r"train_mix\['code'\].*-0.5"),
    (lambda p: D.load_data(eval_mix={"prose": float("nan")}), r"eval_mix\['prose'\].*nan"),
    (lambda p: D.load_data(train_mix={"notes": float("inf")}), r"train_mix\['notes'\].*inf"),
    (lambda p: D.load_data(train_mix={"code": 0.0, "notes": 0}), "train_mix weights are all zero"),
    (lambda p: next(D.load_data().batches(0, 0, 8)), "batch_size.*0"),
    (lambda p: next(D.load_data().batches(0, 4, -1)), "seq_len.*-1"),
    (lambda p: next(D.load_data().batches(-3, 4, 8)), "seed.*-3"),
    (lambda p: D.load_data().eval_sets(8, 4, 0), "n_batches.*0"),
    (lambda p: D.Corpus({"a": (np.zeros(3, np.uint8),)}, {"b": (np.zeros(3, np.uint8),)}), "differ"),
    (lambda p: D.Corpus({"a": (np.zeros(3, np.int64),)}, {"a": (np.zeros(3, np.uint8),)}), r"\['a'\]\[0\].*int64"),
])
def test_bad_inputs_raise_a_clear_value_error(tmp_path, call, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "zeros.bin").write_bytes(b"\x00" * 10)
    (tmp_path / "one.bin").write_bytes(b"\x00only one\x00")
    (tmp_path / "x.csv").write_text("a,b\n")
    np.save(tmp_path / "f.npy", np.zeros(4))
    with pytest.raises(ValueError, match=message):
        call(tmp_path)

"""The ``[data]`` table of an experiment file: built-in and user byte domains, or token shards
(``proxy.data.shards``), and the training and evaluation mixes; parsed into a ``DataSpec``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from proxy.sweep.fields import ExperimentError, _check_keys, _number, _string, _table
from proxy.sweep.spec import DataSpec

_BUILTIN_DOMAINS_FALLBACK = ("code", "prose", "notes")


def parse_mix(value: Any, key: str, domains: tuple[str, ...]) -> dict[str, float]:
    mix = _table(value, key)
    for d, w in mix.items():
        if d not in domains:
            raise ExperimentError(f"{key}.{d}", f"unknown domain; data.domains is {list(domains)}", d)
        _number(w, f"{key}.{d}", non_negative=True)
    if mix and not any(mix.values()):
        raise ExperimentError(key, "weights must not all be zero", mix)
    return {d: float(w) for d, w in mix.items()}


def parse_data(table: Any, base_dir: Path) -> DataSpec:
    table = _table(table, "data")
    _check_keys(table, "data", ("domains", "user_domains", "train_mix", "eval_mix", "shards", "vocab_size",
                                "val_fraction"))
    if "shards" in table:
        return _parse_shards(table, base_dir)
    for key in ("vocab_size", "val_fraction"):
        if key in table:
            raise ExperimentError(f"data.{key}", "applies to token shards only (data.shards)")
    user = _table(table.get("user_domains", {}), "data.user_domains")
    user_paths: dict[str, str] = {}
    for name, path in user.items():
        key = f"data.user_domains.{name}"
        path = Path(_string(path, key))
        path = path if path.is_absolute() else (base_dir / path)
        if not path.exists():
            raise ExperimentError(key, "path does not exist", str(path))
        user_paths[name] = str(path.resolve())
    try:
        from proxy.data import BUILTIN_DOMAINS
    except ImportError:  # the data module is optional for simulated sweeps
        BUILTIN_DOMAINS = _BUILTIN_DOMAINS_FALLBACK
    domains = table.get("domains", list(BUILTIN_DOMAINS) + [n for n in user_paths if n not in BUILTIN_DOMAINS])
    if not isinstance(domains, list) or not domains:
        raise ExperimentError("data.domains", "must be a non-empty array of domain names", domains)
    for i, d in enumerate(domains):
        if d not in BUILTIN_DOMAINS and d not in user_paths:
            raise ExperimentError(f"data.domains[{i}]", "domain does not exist (not built in "
                                  f"{list(BUILTIN_DOMAINS)} nor in data.user_domains)", d)
    if len(set(domains)) != len(domains):
        raise ExperimentError("data.domains", "must not repeat a domain", domains)
    domains = tuple(domains)
    return DataSpec(domains=domains, user_domains=user_paths,
                    train_mix=parse_mix(table.get("train_mix", {}), "data.train_mix", domains),
                    eval_mix=parse_mix(table.get("eval_mix", {}), "data.eval_mix", domains))


SHARD_KEYS = ("paths", "dtype", "eod_id")


def _parse_shards(table: Mapping[str, Any], base_dir: Path) -> DataSpec:
    """``[data.shards.<domain>]`` tables: ``paths`` (a glob or a list of globs, relative to the
    experiment file), ``dtype`` (uint16 | uint32) and ``eod_id``; ``data.vocab_size`` is required
    and ``data.val_fraction`` (default 0.05) sets the split (``proxy.data.shards``)."""
    if "user_domains" in table:
        raise ExperimentError("data.user_domains", "cannot be mixed with data.shards (bytes and token ids)")
    shards_table = _table(table["shards"], "data.shards")
    if not shards_table:
        raise ExperimentError("data.shards", "must name at least one domain")
    shards: dict[str, tuple[tuple[str, ...], str, int]] = {}
    for name, spec in shards_table.items():
        key = f"data.shards.{name}"
        spec = _table(spec, key)
        _check_keys(spec, key, SHARD_KEYS)
        if "paths" not in spec:
            raise ExperimentError(f"{key}.paths", "is required (a glob or a list of globs)")
        patterns = spec["paths"] if isinstance(spec["paths"], list) else [spec["paths"]]
        paths: list[str] = []
        for pattern in patterns:
            pattern = _string(pattern, f"{key}.paths")
            root = Path(pattern) if Path(pattern).is_absolute() else base_dir / pattern
            found = sorted(str(p.resolve()) for p in root.parent.glob(root.name) if p.is_file())
            if not found:
                raise ExperimentError(f"{key}.paths", "matches no file", str(root))
            paths += found
        dtype = spec.get("dtype", "uint16")
        if dtype not in ("uint16", "uint32"):
            raise ExperimentError(f"{key}.dtype", "must be uint16 or uint32", dtype)
        eod = _number(spec.get("eod_id", 0), f"{key}.eod_id", integer=True, non_negative=True)
        shards[name] = (tuple(paths), dtype, int(eod))
    if "vocab_size" not in table:
        raise ExperimentError("data.vocab_size", "is required with data.shards (the tokenizer's vocabulary)")
    vocab = _number(table["vocab_size"], "data.vocab_size", integer=True, positive=True)
    for name, (_, _, eod) in shards.items():
        if eod >= vocab:
            raise ExperimentError(f"data.shards.{name}.eod_id", f"must be below data.vocab_size ({vocab})", eod)
    val = _number(table.get("val_fraction", 0.05), "data.val_fraction", positive=True)
    if val >= 1:
        raise ExperimentError("data.val_fraction", "must be below 1", val)
    domains = table.get("domains", list(shards))
    if not isinstance(domains, list) or not domains:
        raise ExperimentError("data.domains", "must be a non-empty array of domain names", domains)
    for i, d in enumerate(domains):
        if d not in shards:
            raise ExperimentError(f"data.domains[{i}]", "is not a shard domain (data.shards)", d)
    domains = tuple(domains)
    return DataSpec(domains=domains, shards=shards, vocab_size=int(vocab), val_fraction=float(val),
                    train_mix=parse_mix(table.get("train_mix", {}), "data.train_mix", domains),
                    eval_mix=parse_mix(table.get("eval_mix", {}), "data.eval_mix", domains))

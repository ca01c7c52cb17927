"""The built-in domains, present on every Python installation (no download).

- ``code``: the standard library's ``.py`` sources (``sysconfig.get_paths()["stdlib"]``), one file
  one document. Skipped: ``site-packages``, the test suites (``test``, ``tests``, ``idle_test``:
  large, repetitive, and version-specific), ``encodings`` (generated codec tables) and
  ``pydoc_data`` (it *is* the ``prose`` domain's text). About 10 MB on CPython 3.11.
- ``prose``: English text. The documentation topics of ``pydoc_data.topics`` (one topic one
  document, about 0.5 MB) are too small alone, so each stdlib module also contributes one document
  made of its docstrings (module, classes, functions), extracted from the source text by a small
  string/comment scanner, without importing the module (``ast.parse`` of the whole stdlib takes
  seconds; the scanner a fraction of one). A module's docstring document is split together with
  that module's source in ``code`` (same split key), so text seen in ``code`` train never
  reappears in ``prose`` validation.
- ``notes``: a synthetic lab notebook from a fixed generator (dated entries, measurements with
  units, tables, and arithmetic whose results are exact; see ``notes_document``). Document ``i``
  depends only on ``i``: the text is the same on every machine and Python version, because it
  uses only ``random.Random(int).random()``, whose sequence Python guarantees.
The built-in texts of ``code`` and ``prose`` follow the installed Python version.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import os
import random
import re
import sysconfig
import textwrap

from proxy.data.documents import Doc

BUILTIN_DOMAINS = ("code", "prose", "notes")
NOTES_MAX_DOCUMENTS = 4000          # documents of ``notes`` when uncapped (~1.6 kB each)
_STDLIB_SKIP = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test",
                          "encodings", "pydoc_data", "__pycache__"})


def _stdlib_sources() -> list[tuple[str, bytes]]:
    """(path relative to the stdlib folder, source bytes) of the stdlib's .py files, sorted."""
    root = sysconfig.get_paths()["stdlib"]
    out = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _STDLIB_SKIP)
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                with open(path, "rb") as fh:
                    out.append((os.path.relpath(path, root).replace(os.sep, "/"), fh.read()))
    return out


_STDLIB_SOURCES = functools.lru_cache(maxsize=1)(_stdlib_sources)

# Comments, triple-quoted strings and one-line strings, matched in order, so that quotes inside
# a comment or another string never open a docstring (a tokenizer in one regular expression).
_TOKENS = re.compile(r"""#[^\n]*|(?P<q>\"\"\"|''')(?P<body>.*?)(?P=q)|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'""",
                     re.S)
_DEF_NAME = re.compile(r"(?:def|class)\s+(\w+)")


def _docstrings(module: str, source: str) -> str:
    """A module's docstrings as one text: the leading string, and each string right after a ':'."""
    parts, first = [module], True
    for m in _TOKENS.finditer(source):
        body = m.group("body")
        if body is not None:
            before = source[max(0, m.start() - 300): m.start()].rstrip("rRuU").rstrip()
            if first or before.endswith(":"):
                text = textwrap.dedent(body.partition("\n")[2]) if "\n" in body else ""
                text = (body.partition("\n")[0].strip() + "\n" + text).strip()
                names = _DEF_NAME.findall(before[-300:])
                if text:
                    parts.append(f"{names[-1]}: {text}" if names and not first else text)
        if not m.group(0).startswith("#"):
            first = False
    return "\n\n".join(parts) + "\n" if len(parts) > 1 else ""


def _builtin_code() -> list[Doc]:
    return [("stdlib-source", rel, data) for rel, data in _STDLIB_SOURCES()]


def _builtin_prose() -> list[Doc]:
    try:
        from pydoc_data.topics import topics  # plain data module shipped with CPython
    except ImportError:                        # some distributions strip it; docstrings remain
        topics = {}
    docs: list[Doc] = [("prose", f"topic:{k}", topics[k].encode("utf-8")) for k in sorted(topics)]
    for rel, data in _STDLIB_SOURCES():
        module = rel[:-3].replace("/", ".").removesuffix(".__init__")
        text = _docstrings(module, data.decode("utf-8", errors="replace"))
        docs.append(("stdlib-source", rel, text.encode("utf-8")))
    return docs


# ----------------------------------------------------------------------------- notes generator

_QUANTITIES = (("mass", "g"), ("volume", "mL"), ("length", "mm"), ("voltage", "V"),
               ("current", "mA"), ("pressure", "kPa"), ("duration", "s"), ("volume", "µL"))
_SUBJECTS = ("buffer A", "buffer B", "stock solution", "sample", "control", "filtrate",
             "crystal batch", "reference cell", "culture", "alloy coupon")
_PEOPLE = ("A. Novak", "B. Okafor", "C. Lindqvist", "D. Ramos", "E. Tanaka", "F. Haddad")
_PROJECTS = ("electrolyte stability", "enzyme kinetics", "thin-film growth", "soil moisture",
             "catalyst screening", "battery cycling")
_REMARKS = ("Reading was stable after {n} min.", "Repeated the step; results agree.",
            "Slight drift observed, recalibrated the balance.", "Colour changed to {c} after {n} min.",
            "Bubbles formed near the electrode.", "No visible precipitate.",
            "Temperature held within 0.5 °C of the set point.", "Left to settle for {n} min.")
_COLOURS = ("pale yellow", "amber", "light blue", "cloudy white", "deep red")


def _cents(c: int) -> str:
    """An integer number of hundredths as a decimal string: 1234 -> '12.34', -5 -> '-0.05'."""
    return f"{'-' if c < 0 else ''}{abs(c) // 100}.{abs(c) % 100:02d}"


def notes_document(index: int) -> str:
    """Page ``index`` of the synthetic lab notebook (the same text everywhere).

    Lines with arithmetic have these exact forms (values are decimal, results exact except the
    mean, which is rounded half-even to 3 decimals)::

        Total <quantity>: a u + b u [+ ...] = s u
        Change in <quantity>: b u - a u = d u
        <n> x v u = p u
        Mean of <n> readings: (a + b [+ ...]) / <n> = m
        t °C = k K
    """
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ValueError(f"notes_document index must be a non-negative int, got {index!r}")
    seed = int.from_bytes(hashlib.sha256(f"notes:{index}".encode()).digest()[:8], "big")
    rand = random.Random(seed).random   # random() is the one stream Python keeps across versions

    def below(n: int) -> int:
        return int(rand() * n)

    def pick(seq):
        return seq[below(len(seq))]

    day = datetime.date(2015, 1, 5) + datetime.timedelta(days=index + below(3))
    lines = [f"# Lab notebook: {pick(_PROJECTS)}, page {index + 1}", f"Date: {day.isoformat()}",
             f"Operator: {pick(_PEOPLE)}", ""]
    minute = 8 * 60 + below(120)
    for _entry in range(6 + below(10)):
        minute += 5 + below(50)
        lines.append(f"## {minute // 60:02d}:{minute % 60:02d} {pick(_SUBJECTS)}")
        quantity, unit = pick(_QUANTITIES)
        kind = below(6)
        values = [100 + below(99_900) for _ in range(2 + below(4))]
        if kind == 0:
            lines.append(f"Total {quantity}: " + " + ".join(f"{_cents(v)} {unit}" for v in values)
                         + f" = {_cents(sum(values))} {unit}")
        elif kind == 1:
            a, b = values[0], values[1]
            lines.append(f"Change in {quantity}: {_cents(b)} {unit} - {_cents(a)} {unit} = {_cents(b - a)} {unit}")
        elif kind == 2:
            n = 2 + below(24)
            lines.append(f"{n} x {_cents(values[0])} {unit} = {_cents(n * values[0])} {unit}")
        elif kind == 3:
            mean = sum(values) / (100 * len(values))
            lines.append(f"Readings of {quantity} ({unit}): " + ", ".join(_cents(v) for v in values))
            lines.append(f"Mean of {len(values)} readings: (" + " + ".join(_cents(v) for v in values)
                         + f") / {len(values)} = {mean:.3f}")
        elif kind == 4:
            t = -2000 + below(12_000)
            lines.append(f"Bath temperature: {_cents(t)} °C = {_cents(t + 27_315)} K")
        else:
            lines.append(f"| time (min) | {quantity} ({unit}) | temperature (°C) |")
            lines.append("|---|---|---|")
            level, temp = values[0], 1800 + below(900)
            for step in range(3 + below(5)):
                lines.append(f"| {5 * step} | {_cents(level)} | {_cents(temp)} |")
                level += below(400) - 200
                temp += below(60) - 30
        lines.append(pick(_REMARKS).format(n=1 + below(30), c=pick(_COLOURS)))
        lines.append("")
    return "\n".join(lines)


def _builtin_notes(max_bytes: int | None) -> list[Doc]:
    docs, total = [], 0
    for i in range(NOTES_MAX_DOCUMENTS):
        if max_bytes is not None and total >= max_bytes:
            break
        data = notes_document(i).encode("utf-8")
        docs.append(("notes", str(i), data))
        total += len(data)
    return docs


def builtin_documents(name: str, max_bytes: int | None) -> list[Doc]:
    """The documents of the built-in domain ``name`` (``notes`` stops generating at ``max_bytes``)."""
    if name not in BUILTIN_DOMAINS:
        raise ValueError(f"unknown built-in domain {name!r}; known: {list(BUILTIN_DOMAINS)}")
    docs = {"code": _builtin_code, "prose": _builtin_prose}.get(name)
    return docs() if docs else _builtin_notes(max_bytes)


def clear_builtin_cache() -> None:
    """Forget the scanned standard-library sources."""
    _STDLIB_SOURCES.cache_clear()

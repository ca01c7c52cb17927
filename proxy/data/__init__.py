"""Byte-level training data: built-in and user domains, split by document, sampled as a mixture.

- ``proxy.data.documents``: what a document is, deduplication and the byte cap;
- ``proxy.data.builtin``: the built-in ``code``, ``prose`` and ``notes`` domains;
- ``proxy.data.user``: a user's folders, ``.bin`` and ``.npy`` files as domains;
- ``proxy.data.corpus``: the train/validation split by document (``load_corpus``);
- ``proxy.data.mixture``: the weighted mixture sampler and evaluation sets (``load_data``).

NumPy only: the batches are int64 arrays that either framework takes as they are.
"""

from proxy.data.builtin import BUILTIN_DOMAINS, notes_document
from proxy.data.corpus import Corpus, clear_cache, load_corpus
from proxy.data.mixture import MixtureData, load_data

__all__ = ["BUILTIN_DOMAINS", "Corpus", "MixtureData", "load_corpus", "load_data",
           "notes_document", "clear_cache"]

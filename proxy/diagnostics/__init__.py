"""Framework-free drivers of the diagnostics: each asks a backend (``proxy.backends``) to do
the framework work and does the rest itself.

- ``coordcheck``: the coordinate check (settings, slopes, verdicts; the recorders live in each
  backend's folder);
- ``lr_transfer``: the learning-rate transfer study across widths;
- ``bench``: the paired step and MoE-layer timings of ``ladder bench``.
"""

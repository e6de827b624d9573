"""Patches for `python -m bench.compare --patch NAME=bench/variants/NAME.py`.

Each module monkeypatches the current tree when it is executed (that is its whole purpose: the
compare launcher runs it before `server.main()`), so import one only to apply it. Each one
turns off one fast path and leaves a correct server; it fails loudly (RuntimeError) if what it
patches is no longer there, rather than silently measuring the unpatched code.
"""

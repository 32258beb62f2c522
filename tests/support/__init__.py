"""The tests' toolkit: what several test modules build or check in the same way.

- ``signals``: synthetic PCM (tones with noise, click trains).
- ``media``: files made by the ffmpeg command line, and decodes of files by FFmpeg itself.
- ``stores``: a store wrapper that records every request a read makes.
- ``chunks``: the chunk layout of docs/spec.md re-implemented with ``struct`` (an oracle
  independent of ``zarr_aac.codec.chunk_format``), raw chunk access, the sequential reference decode.
- ``selections``: every zarr selection kind compared against a reference.
- ``conformance``: the check every codec configuration passes.

``conftest.py`` keeps only pytest fixtures; test modules import from here.
"""

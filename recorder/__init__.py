"""Session recorder: one tamper-evident file per session, an index, forensics and audit export.

``events`` (what is recorded), ``format`` (the file: frames, hash chain, seal; ``read_recording``,
``verify``), ``writer`` (``Recorder``: queue, writer thread, fsync policy), ``index`` (SQLite
session index); ``capture``, ``replay``, ``sinks`` and ``cli`` build on them. The format and the
writer's guarantees: docs/recording.md.
"""

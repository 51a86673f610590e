"""A cache of audio headers (frames, rate, channels) keyed by file path, size and mtime.

Listing a corpus needs every utterance's duration (for the duration cap and length bucketing);
reading 28k FLAC headers from network storage is slow, stat-ing them is not. An entry is reused
only while the file's size and mtime are unchanged. One TSV per corpus root, replaced atomically,
so concurrent ranks listing the same corpus never read a half-written file.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

from .audio import AudioInfo, probe


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fastctc"


class DurationCache:
    """`info(path)` answers from the cache when the file is unchanged, else from its header."""

    def __init__(self, cache_dir: str | Path, root: str | Path):
        root = os.path.abspath(root)
        key = hashlib.sha1(root.encode()).hexdigest()[:16]
        self.path = Path(cache_dir or default_cache_dir()) / f"headers-{key}.tsv"
        self.entries: dict[str, tuple[int, int, AudioInfo]] = {}
        self.hits = self.misses = 0
        self._dirty = False
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                parts = line.split("\t")
                if len(parts) != 6:
                    continue  # a line from another version of this format: re-probe that file
                path, size, mtime, frames, rate, channels = parts
                self.entries[path] = (int(size), int(mtime), AudioInfo(int(frames), int(rate), int(channels)))

    def info(self, path: str) -> AudioInfo:
        """Raises OSError (missing file) or soundfile's error (unreadable header); failures are not cached."""
        st = os.stat(path)
        hit = self.entries.get(path)
        if hit is not None and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            self.hits += 1
            return hit[2]
        self.misses += 1
        info = probe(path)
        self.entries[path] = (st.st_size, st.st_mtime_ns, info)
        self._dirty = True
        return info

    def save(self) -> None:
        if not self._dirty:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(
                "".join(
                    f"{p}\t{s}\t{m}\t{i.frames}\t{i.sample_rate}\t{i.channels}\n"
                    for p, (s, m, i) in self.entries.items()
                    if "\t" not in p and "\n" not in p
                ),
                encoding="utf-8",
            )  # TSV-safe paths only
            tmp.replace(self.path)
            self._dirty = False
        except OSError as e:  # a read-only home must not stop training: listing is only slower next time
            print(f"fastctc data: warning: could not write the header cache {self.path} ({e})", file=sys.stderr)

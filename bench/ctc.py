"""Entry script for `fastctc bench ctc`; the benchmark is fastctc/bench/ctc.py (shipped in the package)."""

from fastctc.bench.ctc import main

if __name__ == "__main__":
    main()

"""Entry script for `fastctc bench data`; the benchmark is fastctc/bench/data.py (shipped in the package)."""

from fastctc.bench.data import main

if __name__ == "__main__":
    main()

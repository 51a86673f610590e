"""Entry script for `fastctc bench features`; the benchmark is fastctc/bench/features.py (shipped in the package)."""

from fastctc.bench.features import main

if __name__ == "__main__":
    main()

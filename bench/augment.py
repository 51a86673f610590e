"""Entry script for `fastctc bench augment`; the benchmark is fastctc/bench/augment.py (shipped in the package)."""

from fastctc.bench.augment import main

if __name__ == "__main__":
    main()

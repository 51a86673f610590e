"""Entry script for `fastctc bench step`; the benchmark is fastctc/bench/step.py (shipped in the package)."""

from fastctc.bench.step import main

if __name__ == "__main__":
    main()

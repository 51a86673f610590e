"""Entry script for `fastctc bench encoder`; the benchmark is fastctc/bench/encoder.py (shipped in the package)."""

from fastctc.bench.encoder import main

if __name__ == "__main__":
    main()

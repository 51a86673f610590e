"""Entry script for `fastctc bench noisy_corpus`; the benchmark is fastctc/bench/noisy_corpus.py (shipped in the package)."""

from fastctc.bench.noisy_corpus import main

if __name__ == "__main__":
    main()

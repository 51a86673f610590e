"""Entry script for `fastctc bench cost`; the code is fastctc/bench/cost.py (shipped in the package)."""

from fastctc.bench.cost import main

if __name__ == "__main__":
    main()

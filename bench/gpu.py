"""Entry script for `fastctc bench gpu`; the code is fastctc/bench/gpu.py (shipped in the package)."""

from fastctc.bench.gpu import main

if __name__ == "__main__":
    main()

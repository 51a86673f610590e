"""Entry script for `fastctc bench onnx`; the benchmark is fastctc/bench/onnx.py (shipped in the package)."""

from fastctc.bench.onnx import main

if __name__ == "__main__":
    main()

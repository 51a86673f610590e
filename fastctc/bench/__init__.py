"""Benchmarks, shipped in the package so that `fastctc bench NAME` runs from an installed wheel too
(bench/*.py in a checkout are thin entry scripts over these modules).

  ctc      fused Triton CTC vs torch's ctc_loss (timing needs CUDA)
  encoder  native encoder vs transformers, forward and forward+backward, eager and compiled
  step     a whole fastctc training step vs the Trainer-equivalent step, with peak memory
  data     padded fraction vs group_by_length and random batching; loader real-time factor
  onnx     the exported ONNX graph in onnxruntime vs fastctc eager and transformers: CPU inference throughput
  augment  what [augment] (speed, reverberation, noise) adds to a training step, as a share of the step
  cost     no timing: FLOPs and bytes of each model card's step, the H100 floor, predicted run times
  gpu      the one command for a GPU hour: CUDA tests, every benchmark in bf16, a short training run;
           one markdown report and one JSON file
  recipe   the Transformers recipe's Trainer vs fastctc train, end to end from one checkpoint: time to its WER
  noisy_corpus  no timing: builds the noise, impulse responses and noisy test copy that `features` scores on
  features each augmentation / schedule / averaging option alone and all together, trained per seed and
           scored by `fastctc eval` on the clean and the noisy test: the README's measured-effects table

Each prints a table of medians with p20/p80 spread, measures the alternative in the same run in
alternating order, and ends with one JSON line. encoder and step need transformers (the reference).
"""

BENCHMARKS = ("ctc", "encoder", "step", "data", "augment", "recipe", "cost", "gpu", "onnx", "noisy_corpus", "features")

"""The errors fastctc raises for what a user gave it: a config, a corpus, a checkpoint.

Library code raises these with one line that names the key or file and the fix; only `cli.py` turns
them into a message and exit code 2. Each is also a ValueError, for callers that catch bad values.
"""


class FastCTCError(Exception):
    """Base of the user-input errors the command line reports in one line (exit code 2); raised as is
    for what fits none of the kinds below (a run directory without metrics, a missing optional package)."""


class ConfigError(FastCTCError, ValueError):
    """A configuration problem, reported as one line that names the key and the fix."""


class CorpusError(FastCTCError, ValueError):
    """The corpus root or split is not what `data.corpus` expects; the message names the layout expected."""


class CheckpointError(FastCTCError, ValueError):
    """A model or training checkpoint that cannot be read: the message names the file and what to do."""


class MissingHeadError(CheckpointError):
    """A checkpoint without a CTC head (a pretraining checkpoint) loaded without a vocabulary size for a
    fresh one; callers that can choose one (`fastctc parity`) catch it."""


class TrainingError(FastCTCError):
    """A training run that cannot start or go on where it is (its run directory, a failed write, weights
    gone non-finite): the message says what failed, what is intact and the command that resumes."""

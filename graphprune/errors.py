"""One exception family, so callers (and the CLI) can catch everything we raise.

Every message names the file, node or tensor involved and says what to do.
"""


class GraphpruneError(Exception):
    """Base of all graphprune errors; the CLI turns it into one line and exit code 2."""

    exit_code = 2


class InputError(GraphpruneError):
    """The model file or an argument is unusable (missing, unreadable, malformed)."""


class ShapeError(GraphpruneError):
    """A shape needed for the channel analysis could not be inferred."""


class PlanError(GraphpruneError):
    """A pruning plan (kept indices) cannot be applied to this model."""


class VerificationError(GraphpruneError):
    """The pruned model does not reproduce the oracle; nothing was written."""

    exit_code = 1

    def __init__(self, message, verification=None):
        super().__init__(message)
        self.verification = verification

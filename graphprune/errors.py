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


MESSAGE_LIMIT = 240  # characters of a library's message kept in our one line


def shorten(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """A library message (onnx.checker, onnxruntime, protobuf) cut to one readable line.

    Their messages repeat prefixes (``[ONNXRuntimeError] : 1 : FAIL :``,
    ``[ShapeInferenceError] Inference error(s):``), quote C++ source locations
    and signatures, and run over several lines; what the user needs is the
    sentence that says what is wrong. The full text stays on the exception
    chain (``--debug`` shows it).
    """
    import re

    text = " ".join(str(text).split())
    text = re.sub(r"\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
    text = re.sub(r"/onnxruntime_src/\S+:\d+ (?:\S+ )*?\S+::\S+\([^)]*\)(?: const)? ", "", text)
    text = re.sub(r"(\[ShapeInferenceError\] )?Inference error\(s\): ", "", text)
    text = re.sub(r"\s+", " ", text).strip(" :")
    if not text:
        return "no detail"
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"

"""Hugging Face round trip for pruned ``transformers`` models.

After a prune the module's parameters are smaller but its ``config`` still
describes the original sizes, so ``save_pretrained`` + ``from_pretrained``
would rebuild the original architecture and refuse the weights.

* :func:`fit_config` rewrites the config so that the model's class, built
  from it, has exactly the pruned parameter shapes. It is a search, checked
  by construction: candidate edits set an int field that equals a size the
  prune changed to one of that size's new values; each candidate config is
  built on the ``meta`` device (no memory, no weights) and kept when it
  reduces the number of parameters whose shape disagrees. It succeeds when
  none disagrees, i.e. when the prune is expressible by the config (the
  same number of heads, kv heads and FFN width in every layer, as a local
  ratio gives).
* :func:`save_pretrained` writes the model with its fitted config and a
  ``graphprune.json`` holding every parameter shape and every int attribute
  that differs from a fresh build of the class. :func:`from_pretrained`
  rebuilds the architecture from it, so per-layer sizes that no config can
  express (a global ranking) reload too; where the config fits, plain
  ``transformers.AutoModel*.from_pretrained`` works as well.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import json
import os
import re
import sys
from pathlib import Path

import torch
from torch import nn

from .errors import InputError

SIDECAR = "graphprune.json"


def is_hf_model(module) -> bool:
    """Whether ``module`` is a ``transformers.PreTrainedModel``, without importing transformers
    (about 2 s): an instance of one means its module was imported already."""
    modeling = sys.modules.get("transformers.modeling_utils")
    return modeling is not None and isinstance(module, modeling.PreTrainedModel)


def _shapes(module: nn.Module) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _build(model_class, config) -> nn.Module:
    """``model_class(config)`` on ``meta``, its weight initialisation skipped: on meta it writes
    nothing, yet torch's init functions and the class's ``_init_weights`` still dispatch per
    tensor (half of a 2-layer BERT's 20 ms build, run once per candidate of :func:`fit_config`)."""
    with torch.device("meta"), _no_weight_init():
        return model_class(config)


_MEMO: contextvars.ContextVar[dict | None] = contextvars.ContextVar("graphprune_hf_builds", default=None)


@contextlib.contextmanager
def build_memo():
    """Within this block each (class, config) is built once: the fit, its validation veto and the
    attribute sync ask for the shapes of the same candidate configs (the original one 4 times)."""
    token = _MEMO.set({})
    try:
        yield
    finally:
        _MEMO.reset(token)


def _built(model_class, config) -> tuple[dict[str, tuple], dict[str, dict]]:
    """Parameter shapes and int attributes of a meta build of ``model_class(config)`` (memoised
    inside :func:`build_memo`; a build that raises raises again without being retried)."""
    memo = _MEMO.get()
    key = (model_class, config.to_json_string(use_diff=False)) if memo is not None else None
    if key in (memo or {}):
        found = memo[key]
        if isinstance(found, Exception):
            raise found
        return found
    try:
        fresh = _build(model_class, config)
        found = (_shapes(fresh), _attributes(fresh))
    except Exception as exc:
        found = exc
    if memo is not None:
        memo[key] = found
    if isinstance(found, Exception):
        raise found
    return found


def _no_weight_init():
    """transformers' own switch for skipping initialisation (as ``from_pretrained`` does), where
    this transformers has it."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:
        return contextlib.nullcontext()
    return no_init_weights()


def _mismatches(model_class, config, target: dict[str, tuple]) -> int:
    try:
        if hasattr(config, "validate"):
            config.validate()  # what save_pretrained checks (LLaMA: hidden a multiple of the heads)
        fresh = _built(model_class, config)[0]
    except Exception:  # an inconsistent candidate (heads not dividing the width...)
        return len(target) + 1
    return sum(target.get(k) != s for k, s in fresh.items()) + len(target.keys() - fresh.keys())


LAYER_COUNT = re.compile(r"(num_|n_)?(hidden_|encoder_|decoder_)?layers?")  # num_hidden_layers, n_layer...


class _OneLayerScore:
    """:func:`_mismatches` measured on builds with one layer per stack: every layer-count field
    (``num_hidden_layers``, ``n_layer``, ``encoder_layers``...) set to 1, compared with the target's
    shapes of the same names (the first layer's and everything outside the layers). The search
    builds many candidates; a 30-layer model costs 30 layers' modules per build otherwise. Valid
    only where the one-layer build of the original config is a part of its full build (same names,
    same shapes), which :meth:`make` checks; a fit it finds is confirmed by a full build."""

    def __init__(self, model_class, target, fields):
        self.model_class, self.target, self.fields = model_class, target, fields

    @classmethod
    def make(cls, model_class, config, target) -> "_OneLayerScore | None":
        fields = [k for k, v in config.to_dict().items() if LAYER_COUNT.fullmatch(k) and
                  isinstance(v, int) and not isinstance(v, bool) and v > 1]
        if not fields:
            return None
        score = cls(model_class, target, fields)
        try:
            part, whole = _built(model_class, score.reduced(config))[0], _built(model_class, config)[0]
        except Exception:
            return None
        return score if all(whole.get(k) == shape for k, shape in part.items()) else None

    def reduced(self, config):
        one = copy.deepcopy(config)
        for key in self.fields:
            setattr(one, key, 1)
        return one

    def __call__(self, config) -> int:
        try:
            if hasattr(config, "validate"):
                config.validate()
            fresh = _built(self.model_class, self.reduced(config))[0]
        except Exception:
            return len(self.target) + 1
        return sum(self.target.get(k) != s for k, s in fresh.items())


def fit_config(model, changed_sizes: dict[int, set[int]]) -> tuple[bool, dict[str, tuple]]:
    """Edit ``model.config`` in place until its class rebuilds the pruned shapes.

    ``changed_sizes`` maps each size the prune changed to its new sizes.
    Returns ``(fits, {field: (old, new)})``; when it does not fit, the config is
    left as it was and no edit is returned. A config without ``head_dim`` whose
    class derives it as ``hidden_size // num_attention_heads`` but reads the field
    when present (Qwen2, ViT) gets it stated when the hidden size changed, so the
    pruned hidden size keeps the heads' width (heads are pruned whole).
    """
    target = _shapes(model)
    config = model.config
    if sizes_differ_by_layer(model, target):
        return False, {}
    head_dim = _derived_head_dim(config)  # (before any edit)
    stated = {}
    if head_dim is not None and config.hidden_size in changed_sizes and \
            _reads_head_dim(type(model), config, head_dim):
        config.head_dim = head_dim
        stated = {"head_dim": (None, head_dim)}
    edits = _direct_fit(model, config, changed_sizes, target)
    fits = edits is not None
    if not fits:
        full = lambda candidate: _mismatches(type(model), candidate, target)  # noqa: E731
        one_layer = _OneLayerScore.make(type(model), config, target)
        fits, edits = _greedy_fit(config, changed_sizes, one_layer or full)
        if fits and one_layer is not None and full(config):  # the one-layer fit is not the model's
            undo_edits(config, edits)
            fits, edits = _greedy_fit(config, changed_sizes, full)
    if fits:
        return True, {**stated, **edits}
    undo_edits(config, {**stated, **edits})
    return False, {}


def _direct_fit(model, config, changed_sizes, target) -> dict[str, tuple] | None:
    """The usual answer, tried before any search (one build): every int field whose value is a
    size the prune changed to one new size gets that size (hidden, heads, kv heads and FFN width
    are separate fields). The edits when that rebuilds the pruned shapes exactly (and passes the
    config's validation), else None and the config unchanged."""
    edits = single_size_edits(config, changed_sizes)
    if not edits:
        return None
    candidate = copy.deepcopy(config)
    for key, (_, new) in edits.items():
        setattr(candidate, key, new)
    if _mismatches(type(model), candidate, target):
        return None
    for key, (_, new) in edits.items():
        setattr(config, key, new)
    return edits


def single_size_edits(config, changed_sizes: dict[int, set[int]]) -> dict[str, tuple]:
    """``{field: (old, new)}`` for every int field (not a layer count) whose value is a size the
    prune changed to exactly one new size."""
    return {key: (value, next(iter(changed_sizes[value]))) for key, value in config.to_dict().items()
            if isinstance(value, int) and not isinstance(value, bool) and len(changed_sizes.get(value, ())) == 1
            and not LAYER_COUNT.fullmatch(key)}


def sizes_differ_by_layer(model, target: dict[str, tuple]) -> bool:
    """Whether the prune left layers of one kind with different shapes where the config's build
    gives them equal ones (``layer.0.attention.query.weight`` 192 rows, ``layer.1...`` 256: a
    global ranking), which no config of scalar sizes can state: then no search is needed. A
    config with per-layer size lists (Swin's ``num_heads``) may state it, and is searched."""
    if any(isinstance(v, (list, tuple)) and v and all(isinstance(i, int) for i in v)
           for v in model.config.to_dict().values()):
        return False
    try:
        built = _built(type(model), model.config)[0]
    except Exception:
        return False
    kinds: dict[str, list[str]] = {}
    for name in target:
        kinds.setdefault(re.sub(r"\.\d+\.", ".#.", name), []).append(name)
    return any(len({built.get(n) for n in names}) == 1 and len({target[n] for n in names}) > 1
               for names in kinds.values() if len(names) > 1)


def undo_edits(config, edits: dict[str, tuple]) -> None:
    """Put back the fields :func:`fit_config` edited (a field it added, old value None, goes)."""
    for key, (old, _) in edits.items():
        if old is None and key in vars(config):
            delattr(config, key)
        else:
            setattr(config, key, old)


def _reads_head_dim(model_class, config, head_dim: int) -> bool:
    """Whether the class sizes anything by ``config.head_dim`` when it is given (Qwen2 does, BERT
    does not): a build with another head width gives other shapes."""
    probe = copy.deepcopy(config)
    probe.head_dim = head_dim + 1
    try:
        return _built(model_class, probe)[0] != _built(model_class, config)[0]
    except Exception:  # the class refuses the width: it reads it
        return True


def _derived_head_dim(config) -> int | None:
    hidden, heads = getattr(config, "hidden_size", None), getattr(config, "num_attention_heads", None)
    if hasattr(config, "head_dim") or not isinstance(hidden, int) or not isinstance(heads, int) or \
            not heads or hidden % heads:
        return None
    return hidden // heads


def _greedy_fit(config, changed_sizes, mismatches) -> tuple[bool, dict[str, tuple]]:
    """One field at a time, the edit that most reduces the shape disagreement (``mismatches`` of
    a candidate config), until none does.

    Each round builds every remaining candidate, so k candidates and e edits cost about k·e
    builds (one-layer ones where :class:`_OneLayerScore` holds). The first round's improving edits, each field
    at its best value, are tried together first: where they are independent (the usual case:
    hidden size, heads, kv heads and FFN width are separate fields) that one more build ends
    the search; otherwise the rounds go on from the first round's best edit.
    """
    best = mismatches(config)
    edits: dict[str, tuple] = {}
    first_round = True
    while best:
        scores = {}
        for key, value in config.to_dict().items():
            if isinstance(value, bool) or not isinstance(value, int) or key in edits or LAYER_COUNT.fullmatch(key):
                continue  # (a prune never changes a layer count)
            for new in sorted(changed_sizes.get(value, ())):
                candidate = copy.deepcopy(config)
                setattr(candidate, key, new)
                score = mismatches(candidate)
                if score < best and (key not in scores or score < scores[key][0]):
                    scores[key] = (score, value, new)
        if not scores:
            break
        if first_round and len(scores) > 1:
            first_round = False
            together = copy.deepcopy(config)
            for key, (_, _, new) in scores.items():
                setattr(together, key, new)
            if mismatches(together) == 0:
                for key, (_, old, new) in scores.items():
                    setattr(config, key, new)
                    edits[key] = (old, new)
                return True, edits
        key = min(scores, key=lambda k: scores[k][0])
        best, old, new = scores[key]
        setattr(config, key, new)
        edits[key] = (old, new)
    return best == 0, edits


def validation_veto(model, changed_sizes: dict[int, set[int]]) -> str:
    """Why the config cannot state the pruned sizes when only its own validation forbids them:
    every field set to its one new size rebuilds the pruned shapes, yet ``config.validate()``
    (what ``save_pretrained`` runs) refuses the result (LLaMA: a hidden size that is not a
    multiple of the heads). '' otherwise."""
    if not hasattr(model.config, "validate"):
        return ""
    candidate = copy.deepcopy(model.config)
    for key, (_, new) in single_size_edits(model.config, changed_sizes).items():
        setattr(candidate, key, new)
    try:
        shapes = _built(type(model), candidate)[0]
    except Exception:
        return ""
    if shapes != _shapes(model):
        return ""
    try:
        candidate.validate()
    except Exception as exc:
        return " ".join(str(exc).split())[:200] or type(exc).__name__
    return ""


def rebuilt_buffers_agree(model) -> bool:
    """Whether the buffers a reload recomputes from the config (not saved: Gemma's embedding
    ``normalizer`` = √hidden_size, rotary ``inv_freq``) equal the model's own; a fitted config
    that changes them would reload a different function. Owners are rebuilt alone when their
    class takes the config, else the whole class is built once."""
    whole = None
    for path, module in model.named_modules():
        for attr in module._non_persistent_buffers_set:
            mine = module._buffers.get(attr)
            if mine is None:
                continue
            try:
                other = type(module)(model.config)._buffers.get(attr)
            except Exception:
                whole = whole if whole is not None else type(model)(model.config)
                other = dict(whole.named_buffers()).get(f"{path}.{attr}" if path else attr)
            if other is None or other.shape != mine.shape or not torch.equal(other.to(mine.dtype), mine):
                return False
    return True


def _attributes(module: nn.Module) -> dict[str, dict]:
    out = {}
    for path, m in module.named_modules():
        attrs = {k: v for k, v in vars(m).items() if not k.startswith("_") and
                 (isinstance(v, int) and not isinstance(v, bool) or
                  isinstance(v, tuple) and all(isinstance(i, int) for i in v))}
        if attrs:
            out[path] = attrs
    return out


def architecture(model) -> dict:
    """What a fresh build of ``type(model)(model.config)`` lacks: shapes and int attributes."""
    fresh_shapes, fresh_attrs = _built(type(model), model.config)
    shapes = {k: list(s) for k, s in _shapes(model).items() if fresh_shapes.get(k) != s}
    attributes = {}
    for path, attrs in _attributes(model).items():
        diff = {k: v for k, v in attrs.items() if fresh_attrs.get(path, {}).get(k) != v}
        if diff:
            attributes[path] = diff
    return {"class": type(model).__name__, "shapes": shapes, "attributes": attributes}


WEIGHTS = "graphprune.safetensors"


def sync_attributes(model) -> list:
    """Set int attributes that differ from a fresh build of the (fitted) config to the fresh value.

    Modules keep sizes they never read again (Qwen3's ``mlp.intermediate_size``);
    a fitted config makes the fresh value the right one. Returns undo callables
    (the caller keeps the change only if the outputs are unchanged).
    """
    spec = architecture(model)
    if spec["shapes"]:
        return []
    fresh = _built(type(model), model.config)[1]
    undo = []
    for path, attrs in spec["attributes"].items():
        module = model.get_submodule(path)
        for key in attrs:
            if key in fresh.get(path, {}):
                old = getattr(module, key)
                setattr(module, key, fresh[path][key])
                undo.append(lambda m=module, k=key, v=old: setattr(m, k, v))
    return undo


def save_pretrained(model, directory: str | os.PathLike, **kwargs) -> None:
    """Save a pruned model so that it reloads: in Hugging Face's format when its config fits
    (``AutoModel*.from_pretrained`` then works), else the config, the module's own state dict
    (``graphprune.safetensors``) and the ``graphprune.json`` that :func:`from_pretrained` reads."""
    from safetensors.torch import save_model

    if not is_hf_model(model):
        raise InputError(f"expected a transformers PreTrainedModel, got {type(model).__name__}")
    directory = Path(directory)
    spec = architecture(model)
    if spec["shapes"] or spec["attributes"]:
        directory.mkdir(parents=True, exist_ok=True)
        model.config.save_pretrained(directory)
        if getattr(model, "generation_config", None) is not None and model.can_generate():
            model.generation_config.save_pretrained(directory)
        _atomic(directory / WEIGHTS, lambda tmp: save_model(model, str(tmp)))
    else:
        model.save_pretrained(directory, **kwargs)
    _atomic(directory / SIDECAR, lambda tmp: tmp.write_text(json.dumps(spec, indent=1)))


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def from_pretrained(directory: str | os.PathLike, model_class=None, **kwargs):
    """Reload a pruned model saved by :func:`save_pretrained`, whatever its per-layer sizes.

    A directory in Hugging Face's format goes through ``from_pretrained`` of
    its class. Otherwise the class is built from the config on the meta
    device; every parameter the sidecar lists gets its pruned shape and
    every listed attribute its pruned value; then the saved weights load
    strictly and buffers not saved are rebuilt from the config.
    """
    import transformers
    from safetensors.torch import load_model

    directory = Path(directory)
    sidecar = directory / SIDECAR
    spec = json.loads(sidecar.read_text()) if sidecar.exists() else {}
    config = transformers.AutoConfig.from_pretrained(directory)
    if model_class is None:
        name = spec.get("class") or (config.architectures or [None])[0]
        model_class = getattr(transformers, name, None) if name else None
        if model_class is None:
            raise InputError(f"{directory}: cannot tell the model class; pass model_class=")
    if not (directory / WEIGHTS).exists():
        return model_class.from_pretrained(directory, **kwargs).eval()
    model = _build(model_class, config)
    for path, attrs in spec.get("attributes", {}).items():
        module = model.get_submodule(path)
        for key, value in attrs.items():
            setattr(module, key, tuple(value) if isinstance(getattr(module, key, None), tuple) else value)
    model = model.to_empty(device="cpu")
    for name, shape in spec.get("shapes", {}).items():
        owner, _, attr = name.rpartition(".")
        module = model.get_submodule(owner)
        old = getattr(module, attr)
        new = torch.empty(shape, dtype=old.dtype)
        if isinstance(old, nn.Parameter):
            module._parameters[attr] = nn.Parameter(new, requires_grad=old.requires_grad)
        else:
            module._buffers[attr] = new
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    missing, unexpected = load_model(model, str(directory / WEIGHTS), strict=False)
    missing = [k for k in missing if not _is_nonpersistent(model, k)]
    if missing or unexpected:
        raise InputError(f"{directory}: saved weights do not match the pruned architecture "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    _reset_nonpersistent(model, model_class, config)
    return model.eval()
def _is_nonpersistent(model: nn.Module, key: str) -> bool:
    owner, _, attr = key.rpartition(".")
    module = model.get_submodule(owner) if owner else model
    return attr in getattr(module, "_non_persistent_buffers_set", set())


def _reset_nonpersistent(model: nn.Module, model_class, config) -> None:
    """Buffers not saved (rotary ``inv_freq``, position ids) are rebuilt on the CPU.

    Each owner is rebuilt alone when its class takes the config (rotary
    embeddings do); otherwise the whole class is built once.
    """
    owners = [(p, m) for p, m in model.named_modules() if m._non_persistent_buffers_set]
    reference = None
    for path, module in owners:
        try:
            fresh = type(module)(config)
        except Exception:
            if reference is None:
                reference = model_class(config)
            fresh = reference.get_submodule(path) if path else reference
        for attr in module._non_persistent_buffers_set:
            new = fresh._buffers.get(attr)
            if new is not None and module._buffers.get(attr) is not None and \
                    module._buffers[attr].shape == new.shape:
                module._buffers[attr] = new

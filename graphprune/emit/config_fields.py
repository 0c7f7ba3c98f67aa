"""Sizes a forward reads from a shared config object, repaired like module attributes.

Some forwards read a size from the model's config at run time rather than from
their own attributes: Phi-3's attention splits its fused qkv output at
``self.config.num_attention_heads * self.head_dim``. The config is one object
shared by every layer, so after a prune that removes the same heads in every
layer the class runs again only if that field says the new count.

The config is any attribute of a module that is not a module and has
``to_dict`` (a ``transformers.PretrainedConfig`` or alike). Many of its int
fields equal a pruned size by coincidence (``num_hidden_layers`` = 2 = the kv
heads, ``hidden_size`` = 256 = the query width of a small test model), so a
field is set only where a forward that fails *reads* it, in a module whose own
forward had that value rewritten as a literal to exactly one new size: the
forward runs with each read recorded with the innermost module holding the
config that was running; the fields so read are set, and it runs again while it
fails and reads new fields (a crash hides the reads after it). As
for module attributes this is a proposal: the oracle decides.
"""

from __future__ import annotations

import contextlib

import torch.nn as nn


def config_holders(root: nn.Module) -> dict[int, tuple[object, list[str]]]:
    """``{id(config): (config, [paths of the modules holding it])}``."""
    found: dict[int, tuple[object, list[str]]] = {}
    for path, module in root.named_modules():
        for value in vars(module).values():
            if isinstance(value, nn.Module) or not callable(getattr(value, "to_dict", None)) \
                    or not hasattr(value, "__dict__"):
                continue
            found.setdefault(id(value), (value, []))[1].append(path)
    return found


def _int_fields(config) -> dict[str, int]:
    return {attr: value for attr, value in vars(config).items()
            if not attr.startswith("_") and isinstance(value, int) and not isinstance(value, bool) and value > 1}


@contextlib.contextmanager
def _recording(root: nn.Module, holders: dict, reads: set[tuple[str, int, str]]):
    """Record ``(module path, id(config), field)`` for every field read from a held config,
    the path being the innermost holder whose forward is running (aliases of
    ``attribute_map`` resolved to the stored name)."""
    running: list[str] = []
    hooks = []
    for config, paths in holders.values():
        for path in paths:
            module = root.get_submodule(path)
            hooks.append(module.register_forward_pre_hook(lambda _m, _a, p=path: running.append(p)))
            hooks.append(module.register_forward_hook(lambda _m, _a, _o: running.pop()))
    classes = []
    for config, _ in holders.values():
        base = type(config)
        aliases = getattr(base, "attribute_map", {}) or {}

        def __getattribute__(self, name, base=base, aliases=aliases):
            if running:
                reads.add((running[-1], id(self), aliases.get(name, name)))
            return base.__getattribute__(self, name)

        config.__class__ = type(base.__name__, (base,), {"__getattribute__": __getattribute__})
        classes.append((config, base))
    try:
        yield reads
    finally:
        for config, base in classes:
            config.__class__ = base
        for h in hooks:
            h.remove()


def repair_config_fields(root: nn.Module, rewrites: dict, runs, rounds: int = 4) -> tuple[list[str], list]:
    """Set the config fields the forward reads to the sizes its rewritten literals now use.

    A field read by a holder's forward is set when that forward had its value rewritten to
    exactly one new size, the same for every holder reading it. ``rewrites`` is
    :func:`.torch.literal_rewrites`; ``runs()`` a forward raising where it fails.
    Returns ``(["config.field: old -> new"], undo callables)``.
    """
    holders = {key: (config, paths) for key, (config, paths) in config_holders(root).items()
               if any(p in rewrites for p in paths) and _int_fields(config)}
    done: set[tuple[int, str]] = set()
    changes, undo = [], []
    for _ in range(rounds if holders else 0):
        reads: set[tuple[str, int, str]] = set()
        with _recording(root, holders, reads):
            try:
                runs()
                break  # it runs: whatever it read is left as it was
            except Exception:
                pass
        proposals: dict[tuple[int, str], set[int]] = {}
        for path, key, attr in reads:
            value = _int_fields(holders[key][0]).get(attr)
            if (key, attr) not in done and value is not None:
                proposals.setdefault((key, attr), set()).update(rewrites.get(path, {}).get(value, {None}))
        chosen = {k: next(iter(v)) for k, v in proposals.items() if len(v) == 1 and None not in v}
        if not chosen:
            break
        for (key, attr), new in chosen.items():
            config = holders[key][0]
            old = getattr(config, attr)
            setattr(config, attr, new)
            done.add((key, attr))
            undo.append(lambda c=config, a=attr, v=old: setattr(c, a, v))
            changes.append(f"config.{attr}: {old} -> {new}")
    return changes, undo

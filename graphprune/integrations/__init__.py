"""Adapters that run graphprune inside other toolchains.

* :mod:`graphprune.integrations.olive`: Olive passes ``GraphprunePrune``,
  ``GraphpruneFold`` and ``GraphprunePipeline`` (``pip install 'graphprune[olive]'``).

Each adapter imports its toolchain only when it is imported itself, so
``import graphprune`` never needs them.
"""

"""Built-in passes, one module each (installed as ``graphprune.passes``)."""

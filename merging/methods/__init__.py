"""Built-in merge methods; importing this package registers them (order = listing order)."""

from merging.methods import cat, dense, factorwise, lego, rmm, svd  # noqa: F401

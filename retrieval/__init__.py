"""Retrieval: find an adapter for a task by text or by its weights (issue 4, AutoLoRA-style).

Layering: imports ``hub.core`` and third-party libraries only; callers pass plain values.
Heavy modules (faiss, torch) are imported by their own submodules, so importing this package
stays cheap; import what you need:

- ``retrieval.embedders``: ``get_embedder("minilm" | "hash")``, ``card_text``, ``text_hash``.
- ``retrieval.cards``: ``Card`` (name, description, tags, examples), ``CardEmbedder`` (field-fused
  card vectors, ``card_hash``, ``embed_query``).
- ``retrieval.weight_features``: ``FeatureSpec``, ``SlotLayout``, ``adapter_features``.
- ``retrieval.weight_encoder``: ``train_encoder``, ``WeightEncoder.load/save/embed``,
  ``LeastSquaresMap`` (baseline).
- ``retrieval.index``: ``VectorIndex`` (add/remove/search/count/save/load/rebuild),
  ``BACKENDS`` (flat, hnsw, ivf, gpu-flat), ``IndexMismatchError``; files in ``index_files``.
- ``retrieval.search``: ``SearchEngine`` (search text|weights|hybrid, similar), ``Hit``,
  ``MAX_QUERY_CHARS``, ``MAX_K``.
"""

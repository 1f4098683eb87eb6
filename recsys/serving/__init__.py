"""The parts ``Recommender`` puts together to serve, each a room of its own:

- ``vectors``: the embedding model's vectors, loaded once and centred, with a faiss index kept fresh;
- ``ranking``: the one ranking path (serving, the evaluation and ``bench/`` all rank through it);
- ``selection``: which strategy serves (a named one, ``auto``, an experiment's arm);
- ``items``: the catalogue strategies rank, and each item's description, cached;
- ``results``: what serving answers with.
"""

"""Storage drivers of the shell: Milvus behind the core's plain interfaces.

``storage.milvus`` is the item index (``ranking.index.Index``), ``storage.catalog`` the local search tier's
view of what other workers wrote (``ranking.local_tier.Catalog``), ``storage.modalities`` the per-modality
vectors that explain search hits. The core (``ranking``, ``encoders``) never imports this package.
"""

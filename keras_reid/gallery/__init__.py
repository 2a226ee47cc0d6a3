"""A searchable gallery of embeddings: a FAISS index beside a Parquet table.

`index.py` holds the index directory (embeddings, metadata, the FAISS index,
the manifest); `ingestion.py` lists and embeds images into it, resumably;
`matching.py` turns search results into lines and same-person decisions.
`python -m keras_reid.gallery build|add|remove|search` runs them.
"""

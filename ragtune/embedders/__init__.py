"""Embedding engines behind `ragtune.embeddings.make_embedder`; each loads its model lazily on first use."""

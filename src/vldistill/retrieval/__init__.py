"""Fast and Slow retrieval: the Fast dual encoder, its losses, the faiss index, re-ranking."""

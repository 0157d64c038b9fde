"""Sharded, resumable teacher feature cache: write shards, gather an index, read by key."""

from vldistill.features.cache import FIELDS, MODALITIES, cache_shard, gather_index, shard_slice
from vldistill.features.store import FeatureStore

__all__ = ["FIELDS", "MODALITIES", "FeatureStore", "cache_shard", "gather_index", "shard_slice"]

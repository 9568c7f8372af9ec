"""Custom graph types of this pack (their type strings are part of saved workflows: never rename)."""

from comfy_api.latest import io

Inversion = io.Custom("NTP_INVERSION")
NullEmbeddings = io.Custom("NTP_NULL_EMBEDDINGS")
AttentionControl = io.Custom("NTP_ATTENTION_CONTROL")
AttentionMaps = io.Custom("NTP_ATTENTION_MAPS")

CATEGORY = "nulltext_p2p"

"""Custom graph types of this pack (their type strings are part of saved workflows: never rename), and how the
nodes are named and found in the frontend."""

from __future__ import annotations

from comfy_api.latest import io

from ..host.compat import schema_has_search_aliases

Inversion = io.Custom("NTP_INVERSION")
NullEmbeddings = io.Custom("NTP_NULL_EMBEDDINGS")
AttentionControl = io.Custom("NTP_ATTENTION_CONTROL")
AttentionMaps = io.Custom("NTP_ATTENTION_MAPS")

CATEGORY = "nulltext_p2p"

#: The pack's short name, the start of every node's display name.
PACK_NAME = "Null-text P2P"

#: Words every node of the pack is found by (search aliases, where the host and frontend support them).
PACK_ALIASES = ["Null-text P2P", "null text", "nulltext", "null-text inversion", "prompt to prompt", "p2p"]


def display_name(name: str) -> str:
    """``"Null-text P2P: <name>"``: the node's display name (its title when added, and the node named in errors).

    The pack's name goes first because the frontend's fuzzy search (name and display name only on frontend
    1.27) penalises a match by its distance from the start: "p2p" or "nulltext" found at character 32 (the end of
    "Attention Controller (Null-text P2P)") no longer counts as a match.
    """
    return f"{PACK_NAME}: {name}"


def search_aliases(*words: str) -> dict:
    """``{"search_aliases": [...]}`` (the pack's words and ``words``) for ``io.Schema(**...)`` where the host's
    schema has search aliases (``compat.schema_has_search_aliases``); ``{}`` on older hosts."""
    if not schema_has_search_aliases(io.Schema):
        return {}
    return {"search_aliases": [*PACK_ALIASES, *words]}

"""Errors raised by the nodes: each names the node, the input and what to do."""

from __future__ import annotations


def _sentence(text: str) -> str:
    """``text`` stripped, ending with a full stop (unless it already ends a sentence)."""
    text = str(text).strip()
    if text and text[-1] not in ".!?":
        text += "."
    return text


class NodeInputError(ValueError):
    """A user-fixable problem with one input of one node.

    The message reads ``[<node display name>] input '<input>': <problem>. Fix: <fix>.``: ``node`` is the node's
    display name as the node library shows it (what the backend knows of the node; the frontend shows the node's
    own title beside the message), ``problem`` says what is wrong and ``fix`` what to do, each once.
    """

    def __init__(self, node: str, input_name: str, problem: str, fix: str) -> None:
        self.node, self.input_name = node, input_name
        self.problem, self.fix = _sentence(problem), _sentence(fix)
        super().__init__(f"[{node}] input '{input_name}': {self.problem} Fix: {self.fix}")

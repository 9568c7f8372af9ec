"""Errors raised by the nodes: each names the node, the input and what to do."""

from __future__ import annotations


class NodeInputError(ValueError):
    """A user-fixable problem with one input of one node."""

    def __init__(self, node: str, input_name: str, problem: str, fix: str) -> None:
        self.node, self.input_name, self.problem, self.fix = node, input_name, problem, fix
        super().__init__(f"[{node}] input '{input_name}': {problem} Fix: {fix}")

"""Tokenised prompts for Prompt-to-Prompt, without any tokenizer object.

The host tokenises each word of a prompt (CLIP BPE works word by word, so the tokens of the words, in
order, are the tokens of the prompt) and builds a :class:`PromptTokens`. Everything in ``core`` that needs
to know which of the 77 text positions belong to which word works from this object.

Position convention (the same as the reference ``ptp_utils.get_word_inds``): position 0 is the BOS
token, the first token of the first word is position 1, the EOS token follows the last word token, and
the rest of the ``max_len`` sequence is padding.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PUNCTUATION", "PromptError", "PromptTokens", "normalize_word", "split_prompt"]

#: Characters ignored at both ends of a word when matching words given by the user.
PUNCTUATION = ",.;:!?\"'()"


class PromptError(ValueError):
    """A prompt or an edit specification that cannot be used (the message says why and what to do)."""


def normalize_word(w: str) -> str:
    """Lower-case ``w`` and strip surrounding punctuation (``,.;:!?"'()``) and whitespace."""
    return w.strip().strip(PUNCTUATION).strip().lower()


def split_prompt(text: str) -> tuple[str, ...]:
    """Split a prompt into words the way :class:`PromptTokens` expects.

    This is the reference's ``text.split(" ")`` after collapsing runs of whitespace (and dropping it at
    both ends), i.e. ``tuple(text.split())``.
    """
    return tuple(text.split())


@dataclass(frozen=True)
class PromptTokens:
    """A prompt split into words, with the host tokenizer's ids for each word.

    Attributes:
        text: the prompt as typed.
        words: ``split_prompt(text)``.
        word_tokens: token ids of each word (no BOS/EOS); one non-empty tuple per word.
        bos, eos: the tokenizer's start and end token ids.
        max_len: length of the padded token sequence seen by cross-attention (77 for CLIP).
    """

    text: str
    words: tuple[str, ...]
    word_tokens: tuple[tuple[int, ...], ...]
    bos: int
    eos: int
    max_len: int = 77

    def __post_init__(self) -> None:
        # Normalise containers to tuples so the object stays hashable and immutable.
        object.__setattr__(self, "words", tuple(self.words))
        object.__setattr__(self, "word_tokens", tuple(tuple(int(t) for t in wt) for wt in self.word_tokens))
        if self.words != split_prompt(self.text):
            raise PromptError(
                f"PromptTokens.words {list(self.words)!r} do not match the prompt {self.text!r} split on "
                f"whitespace {list(split_prompt(self.text))!r}; build words with split_prompt(text)"
            )
        if len(self.word_tokens) != len(self.words):
            raise PromptError(
                f"PromptTokens has {len(self.words)} words but token ids for {len(self.word_tokens)} words"
            )
        for w, wt in zip(self.words, self.word_tokens):
            if len(wt) == 0:
                raise PromptError(f"the word {w!r} of the prompt {self.text!r} gives no tokens")
        if self.max_len < 2:
            raise PromptError(f"max_len must be at least 2, got {self.max_len}")
        n = sum(len(wt) for wt in self.word_tokens)
        if n > self.max_len - 2:
            raise PromptError(
                f"the prompt {self.text!r} has {n} tokens but at most {self.max_len - 2} fit "
                f"({self.max_len} minus start and end tokens); shorten it"
            )

    def ids(self) -> list[int]:
        """``[bos] + tokens of all words + [eos]``, without padding (like ``tokenizer.encode(text)``)."""
        out = [self.bos]
        for wt in self.word_tokens:
            out.extend(wt)
        out.append(self.eos)
        return out

    @property
    def n_tokens(self) -> int:
        """Number of tokens including BOS and EOS, i.e. ``len(self.ids())``."""
        return 2 + sum(len(wt) for wt in self.word_tokens)

    def word_positions(self, i: int) -> list[int]:
        """Positions of word ``i``'s tokens in the ``max_len`` sequence (reference ``get_word_inds(text, i)``)."""
        if not 0 <= i < len(self.words):
            raise IndexError(f"word index {i} out of range for a prompt of {len(self.words)} words")
        start = 1 + sum(len(wt) for wt in self.word_tokens[:i])
        return list(range(start, start + len(self.word_tokens[i])))

    def find(self, phrase: str) -> list[int]:
        """Positions of all tokens of every occurrence of a word or multi-word phrase.

        Words are compared with :func:`normalize_word` (case-insensitive, surrounding punctuation ignored).
        Returns a sorted list without duplicates; ``[]`` when the phrase does not occur.
        """
        wanted = [normalize_word(w) for w in phrase.split()]
        wanted = [w for w in wanted if w]
        if not wanted:
            return []
        have = [normalize_word(w) for w in self.words]
        n = len(wanted)
        out: set[int] = set()
        for start in range(len(have) - n + 1):
            if have[start:start + n] == wanted:
                for i in range(start, start + n):
                    out.update(self.word_positions(i))
        return sorted(out)

    def describe(self) -> str:
        """The prompt's words, quoted, for error messages."""
        return "[" + ", ".join(repr(w) for w in self.words) + "]"

"""Tokenised prompts for Prompt-to-Prompt, without any tokenizer object.

The host tokenises each word of a prompt (CLIP BPE works word by word, so the tokens of the words, in
order, are the tokens of the prompt) and builds a :class:`PromptTokens`. Everything in ``core`` that needs
to know which of the 77 text positions belong to which word works from this object.

Position convention (the same as the reference ``ptp_utils.get_word_inds``): position 0 is the BOS
token, the first token of the first word is position 1, the EOS token follows the last word token, and
the rest of the ``max_len`` sequence is padding. Other tokenizers put other tokens around the words (T5: none
before, EOS after; Qwen-Image: none before, the chat template's closing tokens after): ``prefix`` and ``suffix``.

A text context made of several tokenised sequences side by side (SD3: 77 CLIP tokens per 75-token chunk, then the
T5 tokens) is a :class:`PromptLayout`: one :class:`PromptTokens` per segment at its offset.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PUNCTUATION", "PromptError", "PromptLayout", "PromptTokens", "normalize_word", "split_prompt", "segments_of"]

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
        prefix, suffix: the tokens before the first word and after the last one (default ``(bos,)`` and
            ``(eos,)``, CLIP's).
    """

    text: str
    words: tuple[str, ...]
    word_tokens: tuple[tuple[int, ...], ...]
    bos: int
    eos: int
    max_len: int = 77
    prefix: tuple[int, ...] | None = None
    suffix: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        # Normalise containers to tuples so the object stays hashable and immutable.
        object.__setattr__(self, "prefix", (int(self.bos),) if self.prefix is None else tuple(int(t) for t in self.prefix))
        object.__setattr__(self, "suffix", (int(self.eos),) if self.suffix is None else tuple(int(t) for t in self.suffix))
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
        around = len(self.prefix) + len(self.suffix)
        if self.max_len < around:
            raise PromptError(f"max_len must be at least {around}, got {self.max_len}")
        n = sum(len(wt) for wt in self.word_tokens)
        if n > self.max_len - around:
            raise PromptError(
                f"the prompt {self.text!r} has {n} tokens but at most {self.max_len - around} fit "
                f"({self.max_len} minus start and end tokens); shorten it"
            )

    def ids(self) -> list[int]:
        """``prefix + tokens of all words + suffix`` (CLIP: ``[bos] ... [eos]``), without padding (like
        ``tokenizer.encode(text)``)."""
        out = list(self.prefix)
        for wt in self.word_tokens:
            out.extend(wt)
        out.extend(self.suffix)
        return out

    @property
    def n_tokens(self) -> int:
        """Number of tokens including the prefix and suffix (BOS and EOS), i.e. ``len(self.ids())``."""
        return len(self.prefix) + len(self.suffix) + sum(len(wt) for wt in self.word_tokens)

    def word_positions(self, i: int) -> list[int]:
        """Positions of word ``i``'s tokens in the ``max_len`` sequence (reference ``get_word_inds(text, i)``)."""
        if not 0 <= i < len(self.words):
            raise IndexError(f"word index {i} out of range for a prompt of {len(self.words)} words")
        start = len(self.prefix) + sum(len(wt) for wt in self.word_tokens[:i])
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


@dataclass(frozen=True)
class PromptLayout:
    """A text context of several token sequences side by side: ``segments`` are ``(offset, PromptTokens)`` pairs
    (offsets ascending, each segment's ``max_len`` positions from its offset), within ``max_len`` positions in all.

    Each segment holds the words it tokenises (SD3: the words of each 75-token CLIP chunk, then all words in T5).
    It answers what :class:`PromptTokens` answers for the edit (``words``, ``find``, ``max_len``); the mappers are
    built segment by segment (``core.attention_edit``).
    """

    text: str
    segments: tuple[tuple[int, PromptTokens], ...]
    max_len: int
    first_words: tuple[int, ...] = ()  # index in ``words`` of each segment's first word (default: all 0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "segments", tuple((int(o), p) for o, p in self.segments))
        firsts = tuple(int(f) for f in self.first_words) or (0,) * len(self.segments)
        object.__setattr__(self, "first_words", firsts)
        if len(firsts) != len(self.segments):
            raise PromptError("one first-word index per prompt segment is needed")
        for f, (_, p) in zip(firsts, self.segments):
            if tuple(self.words[f:f + len(p.words)]) != p.words:
                raise PromptError(f"a prompt segment's words {list(p.words)} are not the prompt's words from {f}")
        end = 0
        for offset, p in self.segments:
            if offset < end:
                raise PromptError(f"prompt segments overlap at position {offset}")
            end = offset + p.max_len
        if end > self.max_len:
            raise PromptError(f"prompt segments end at {end}, beyond the {self.max_len} text positions")

    @property
    def words(self) -> tuple[str, ...]:
        return split_prompt(self.text)

    @property
    def n_tokens(self) -> int:
        """The text positions up to the end of the last segment's tokens."""
        return max(offset + p.n_tokens for offset, p in self.segments)

    def word_positions(self, i: int) -> list[int]:
        """Positions of word ``i``'s tokens in every segment that holds it."""
        if not 0 <= i < len(self.words):
            raise IndexError(f"word index {i} out of range for a prompt of {len(self.words)} words")
        out = []
        for f, (offset, p) in zip(self.first_words, self.segments):
            if f <= i < f + len(p.words):
                out.extend(offset + q for q in p.word_positions(i - f))
        return sorted(out)

    def find(self, phrase: str) -> list[int]:
        """Positions of the phrase's tokens in every segment (sorted, no duplicates)."""
        return sorted({offset + q for offset, p in self.segments for q in p.find(phrase)})

    def describe(self) -> str:
        return "[" + ", ".join(repr(w) for w in self.words) + "]"


def segments_of(prompt: "PromptTokens | PromptLayout") -> tuple[tuple[int, PromptTokens], ...]:
    """A prompt's ``(offset, PromptTokens)`` segments (a plain :class:`PromptTokens` is one segment at 0)."""
    return prompt.segments if isinstance(prompt, PromptLayout) else ((0, prompt),)

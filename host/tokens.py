"""Prompts tokenised with the graph's own CLIP, word by word, for Prompt-to-Prompt."""

from __future__ import annotations

from ..core.prompt_tokens import PromptError, PromptTokens, split_prompt


def _encoder_key(tokens: dict) -> str:
    """Which encoder's tokens to read: the only one (SD 1.x "l", SD 2.x "h") or CLIP-L of SDXL's pair."""
    if len(tokens) == 1:
        return next(iter(tokens))
    if set(tokens) == {"g", "l"}:  # SDXL: CLIP-L and CLIP-G share the vocabulary (only the padding differs)
        return "l"
    raise PromptError(f"this CLIP has text encoders {sorted(tokens)} (SD3/Flux?); connect the CLIP of an SD 1.x/2.x "
                      "or SDXL checkpoint.")


def _single_encoder_tokens(clip, text: str) -> list[list]:
    tokens = clip.tokenize(text)
    if not isinstance(tokens, dict) or not tokens:
        raise PromptError("this CLIP's tokenizer is not a CLIP tokenizer; connect the CLIP of an SD 1.x/2.x or SDXL checkpoint.")
    return tokens[_encoder_key(tokens)]


def _end_token(clip) -> int:
    tok = clip.tokenizer
    inner = getattr(tok, getattr(tok, "clip", ""), None) or getattr(tok, "clip_l", None)
    end = getattr(inner, "end_token", None)
    if end is None:
        raise PromptError("cannot find the end token of this CLIP's tokenizer; connect the CLIP of an SD 1.x/2.x or "
                          "SDXL checkpoint.")
    return int(end)


def prompt_tokens(clip, text: str) -> PromptTokens:
    """Tokenise ``text`` word by word with the host's tokenizer and check it matches the whole-prompt tokens."""
    words = split_prompt(text)
    if not words:
        raise PromptError("the prompt is empty; type a caption of the image (e.g. 'a cat sitting on a table').")
    chunks = _single_encoder_tokens(clip, text)
    if len(chunks) > 1:
        raise PromptError(f"the prompt needs more than 75 tokens; shorten it for Prompt-to-Prompt ('{text[:60]}...').")
    full = [t[0] for t in chunks[0]]
    eos = _end_token(clip)
    bos = full[0]
    word_tokens = []
    for w in words:
        toks = [t[0] for t in _single_encoder_tokens(clip, w)[0]]
        word_tokens.append(tuple(int(t) for t in toks[1:toks.index(eos, 1)]))
    joined = [bos] + [t for wt in word_tokens for t in wt] + [eos]
    if any(hasattr(t, "shape") for t in full) or [int(t) for t in full[: len(joined)]] != joined:
        raise PromptError(
            "the prompt uses syntax that cannot be mapped to words (weights like '(word:1.2)', embeddings or "
            "escapes); write it as plain words for Prompt-to-Prompt.")
    return PromptTokens(text=text, words=words, word_tokens=tuple(word_tokens), bos=int(bos), eos=eos)

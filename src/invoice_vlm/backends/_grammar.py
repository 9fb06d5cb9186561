"""A schema's grammar for constrained decoding: the bounded grammar where a bound is near, a lifted one elsewhere.

Every text field's grammar carries its length bound as a counted repetition (``{0,254}``, see
`invoice_vlm.constraints`), and xgrammar fills a token mask inside one several times slower than inside an
unbounded repetition (``*``), slower the more characters are written: at batch 8 on a CPU the masks of text fields
had cost a fifth of jump-forward decoding. The lifted grammar (`~invoice_vlm.constraints.lift_text_bounds`: the
same, with text fields unbounded) allows exactly the tokens the bounded one does wherever no token can take a text
field past its bound, so each row (`LiftedMatcher`) keeps both:

- a `JsonCursor` over the bytes written says whether the row is inside a text field and how far in;
- where the bytes written plus the longest token text can hold (in bytes, up to its first quote; a token with a
  control character or a backslash there cannot be in text) could pass that field's bound in characters, the **bounded** matcher is brought up to date (it takes the tokens taken since it
  last was) and masks, accepts and forces (jump-forward) the next token;
- everywhere else the **lifted** matcher does, and the bounded one waits.

A character is at least one byte, so the test is conservative: the masks, the tokens and their probabilities are
the bounded grammar's. Where one token could write more than the shortest field's bound into a value it opens (a
vocabulary of long tokens, a field of a few characters), nothing is lifted and the bounded matcher does it all.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from invoice_vlm.constraints import json_grammar, lift_text_bounds

_QUOTE, _BACKSLASH = 0x22, 0x5C
_NO_TEXT = re.compile(rb"[\x00-\x1f\\]")  # bytes a text field never holds (STRING_CHARS)


class JsonCursor:
    """Where compact JSON written byte by byte stands: inside which string, of which field, how many bytes in.

    Reads the JSON a constrained decoder writes (one value, no free white space needed): a value string's field
    path is its keys with ``"[]"`` for a list's items, as `~invoice_vlm.constraints.lift_text_bounds` names them,
    and ``bound`` is that field's bound from ``bounds`` (``None`` outside a bounded text field).
    """

    __slots__ = ("_bounds", "_escaped", "_frames", "_is_key", "_key", "bound", "in_string", "length")

    def __init__(self, bounds: Mapping[tuple[str, ...], int]) -> None:
        self._bounds = bounds
        # Per open container: ["{", its current key, whether a key comes next], or ["[", None, False].
        self._frames: list[list[Any]] = []
        self._key = bytearray()
        self._is_key = self._escaped = self.in_string = False
        self.length = 0  # bytes written inside the open string
        self.bound: int | None = None

    def copy(self) -> JsonCursor:
        twin = JsonCursor(self._bounds)
        twin._frames = [list(frame) for frame in self._frames]
        twin._key = bytearray(self._key)
        twin._is_key, twin._escaped, twin.in_string = self._is_key, self._escaped, self.in_string
        twin.length, twin.bound = self.length, self.bound
        return twin

    def feed(self, data: bytes) -> None:
        if self.in_string and not (self._is_key or self._escaped) and b'"' not in data and b"\\" not in data:
            self.length += len(data)  # text inside a value: only its length changes
            return
        frames = self._frames
        for byte in data:
            if self.in_string:
                if self._escaped:
                    self._escaped = False
                elif byte == _BACKSLASH:
                    self._escaped = True
                elif byte == _QUOTE:
                    self.in_string, self.bound = False, None
                    if self._is_key:
                        frames[-1][1] = json.loads(b'"' + bytes(self._key) + b'"')
                    continue
                self.length += 1
                if self._is_key:
                    self._key.append(byte)
            elif byte == _QUOTE:
                top = frames[-1] if frames else None
                self._is_key = top is not None and top[0] == "{" and top[2]
                self.in_string, self.length = True, 0
                self._key.clear()
                self.bound = None if self._is_key else self._bounds.get(self._path())
            elif byte == 0x7B:  # {
                frames.append(["{", None, True])
            elif byte == 0x5B:  # [
                frames.append(["[", None, False])
            elif byte in (0x7D, 0x5D):  # } ]
                if frames:
                    frames.pop()
            elif frames and frames[-1][0] == "{":
                if byte == 0x3A:  # :
                    frames[-1][2] = False
                elif byte == 0x2C:  # ,
                    frames[-1][2] = True

    def _path(self) -> tuple[str, ...]:
        return tuple(str(frame[1]) if frame[0] == "{" else "[]" for frame in self._frames)

    def near_bound(self, reach: int) -> bool:
        """Whether a token writing up to ``reach`` more bytes into the open string could pass its field's bound."""
        return self.bound is not None and self.length + reach > self.bound


class LiftedMatcher:
    """One row's grammar: the lifted matcher decides away from text bounds, the bounded one near them.

    Offers what the decoders use of xgrammar's ``GrammarMatcher``. The bounded matcher is brought up to date (the
    tokens taken since it last was) only when the row comes near a bound, so a document that never does pays for
    one matcher only.
    """

    __slots__ = ("_bounded", "_cursor", "_grammar", "_lifted", "_pending")

    def __init__(
        self, grammar: SchemaGrammar, bounded: Any, lifted: Any, cursor: JsonCursor, pending: list[int]
    ) -> None:
        self._grammar, self._bounded, self._lifted, self._cursor = grammar, bounded, lifted, cursor
        self._pending = pending  # tokens the lifted matcher took that the bounded one has not

    def _deciding(self) -> Any:
        """The matcher whose masks and forced text are the bounded grammar's for the row's next token."""
        if not self._cursor.near_bound(self._grammar.reach):
            return self._lifted
        for token in self._pending:
            if not self._bounded.accept_token(token):
                raise RuntimeError(f"the schema's grammar refused token {token}, which its lifted form took")
        self._pending.clear()
        return self._bounded

    def accept_token(self, token: int) -> bool:
        deciding = self._deciding()
        if not deciding.accept_token(token):
            return False
        if deciding is self._lifted:
            self._pending.append(token)
        elif not self._lifted.accept_token(token):  # it allows all the bounded grammar does, and more
            raise RuntimeError(f"the lifted grammar refused token {token}, which the schema's grammar took")
        pieces = self._grammar.pieces
        self._cursor.feed(pieces[token] if token < len(pieces) else b"")
        return True

    def fill_next_token_bitmask(self, bitmask: Any, index: int = 0) -> bool:
        return bool(self._deciding().fill_next_token_bitmask(bitmask, index))

    def is_terminated(self) -> bool:
        return bool(self._lifted.is_terminated())  # both end on the same tokens

    def find_jump_forward_string(self) -> str:
        return str(self._deciding().find_jump_forward_string())

    def fork(self) -> LiftedMatcher:
        return LiftedMatcher(
            self._grammar, self._bounded.fork(), self._lifted.fork(), self._cursor.copy(), list(self._pending)
        )


def _opened(piece: bytes) -> int:
    """The most bytes ``piece`` writes into a string it opens that may be a value.

    The text after its last quote, or between two of its quotes unless a colon follows (then it was a key).
    """
    parts = piece.split(b'"')[1:]
    inner = [len(part) for part, after in itertools.pairwise(parts) if not after.startswith(b":")]
    return max([*inner, len(parts[-1])]) if parts else 0


@dataclass(frozen=True)
class TokenBytes:
    """A vocabulary's bytes per token (special tokens write none), and how far one token reaches into text.

    ``reach``: the most bytes one token writes into a text field it is in (up to its first quote; a token with a
    control character or a backslash there is refused in text by both grammars); ``opens``: the most it writes into
    a value it opens after one of its quotes (`_opened`). Computed once per tokenizer.
    """

    pieces: tuple[bytes, ...]
    reach: int
    opens: int

    @classmethod
    def of(cls, pieces: Sequence[bytes], special: Sequence[int]) -> TokenBytes:
        skip = set(special)
        kept = tuple(b"" if token in skip else piece for token, piece in enumerate(pieces))
        prefixes = (piece.split(b'"', 1)[0] for piece in kept)
        return cls(
            pieces=kept,
            reach=max((len(text) for text in prefixes if not _NO_TEXT.search(text)), default=0),
            opens=max((_opened(piece) for piece in kept), default=0),
        )


class SchemaGrammar:
    """A JSON schema's compiled grammar (xgrammar) for one tokenizer, and matchers over it (`matcher`)."""

    def __init__(self, compiler: Any, json_schema: Any, tokens: TokenBytes) -> None:
        self.bounded = compiler.compile_grammar(json_grammar(json_schema))
        lifted, self.bounds = lift_text_bounds(json_schema)
        self.pieces, self.reach = tokens.pieces, tokens.reach
        self.lifted = (
            compiler.compile_grammar(json_grammar(lifted))
            if self.bounds and tokens.opens <= min(self.bounds.values())
            else None
        )

    def matcher(self) -> Any:
        """A fresh matcher for one row: a `LiftedMatcher`, or xgrammar's own where nothing is lifted."""
        import xgrammar

        bounded = xgrammar.GrammarMatcher(self.bounded)
        if self.lifted is None:
            return bounded
        return LiftedMatcher(self, bounded, xgrammar.GrammarMatcher(self.lifted), JsonCursor(self.bounds), [])
